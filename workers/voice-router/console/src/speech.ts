// The browser's own speech, where it has it (feature-detected; typing always works): the Web
// Speech API's SpeechRecognition (Chromium: webkitSpeechRecognition) for the user's voice and
// speechSynthesis for the agent's. Nothing leaves for a third-party service from this code.

interface RecognitionResult {
  isFinal: boolean;
  0: { transcript: string };
}
interface RecognitionEvent {
  resultIndex: number;
  results: ArrayLike<RecognitionResult>;
}
export interface Recognition {
  lang: string;
  continuous: boolean;
  interimResults: boolean;
  onresult: ((event: RecognitionEvent) => void) | null;
  onspeechstart: (() => void) | null;
  onend: (() => void) | null;
  onerror: ((event: { error: string }) => void) | null;
  start(): void;
  stop(): void;
}
type RecognitionConstructor = new () => Recognition;

function recognitionConstructor(): RecognitionConstructor | null {
  const w = window as unknown as Record<string, unknown>;
  const found = w.SpeechRecognition ?? w.webkitSpeechRecognition;
  return typeof found === "function" ? (found as RecognitionConstructor) : null;
}

export const canListen = () => recognitionConstructor() !== null;
export const canSpeak = () => typeof window.speechSynthesis !== "undefined" && typeof SpeechSynthesisUtterance === "function";

/** Listens until stopped: `onSpeech` when the user starts talking (to interrupt a reply),
 * `onUtterance` with each final transcript. */
export function listen(handlers: { onSpeech: () => void; onUtterance: (text: string) => void; onStop: (error?: string) => void }): Recognition | null {
  const Constructor = recognitionConstructor();
  if (!Constructor) return null;
  const recognition = new Constructor();
  recognition.lang = navigator.language || "en-US";
  recognition.continuous = true;
  recognition.interimResults = false;
  recognition.onspeechstart = handlers.onSpeech;
  recognition.onresult = (event) => {
    for (let i = event.resultIndex; i < event.results.length; i++) {
      const result = event.results[i];
      const text = result?.[0].transcript.trim();
      if (result?.isFinal && text) handlers.onUtterance(text);
    }
  };
  recognition.onerror = (event) => handlers.onStop(event.error);
  recognition.onend = () => handlers.onStop();
  recognition.start();
  return recognition;
}

/** Speaks reply pieces in order and knows how much of the reply was actually spoken. */
export class Speaker {
  private spoken = "";
  private queued = 0;

  /** Text spoken aloud of the current reply so far. */
  get heard(): string {
    return this.spoken;
  }

  speak(piece: string): void {
    if (!piece.trim() || !canSpeak()) return;
    const utterance = new SpeechSynthesisUtterance(piece);
    this.queued++;
    utterance.onend = () => {
      this.spoken += piece;
      this.queued--;
    };
    utterance.onerror = () => {
      this.queued--;
    };
    window.speechSynthesis.speak(utterance);
  }

  /** Whether anything is still being spoken. */
  get speaking(): boolean {
    return this.queued > 0;
  }

  /** Stops speaking (the user spoke over it) and starts a new reply. */
  cancel(): void {
    if (canSpeak()) window.speechSynthesis.cancel();
    this.queued = 0;
  }

  /** A new reply begins. */
  reset(): void {
    this.spoken = "";
  }
}

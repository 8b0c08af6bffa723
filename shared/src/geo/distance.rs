//! Where things are on Earth and how far apart: the `nearest` rule's only arithmetic.

use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG), in kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on Earth in decimal degrees, always within range and finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coordinates {
    /// -90 (south pole) to 90 (north pole).
    pub latitude: f64,
    /// -180 to 180, east positive.
    pub longitude: f64,
}

impl Coordinates {
    /// A point, or `None` when either value is out of range or not a number.
    pub fn new(latitude: f64, longitude: f64) -> Option<Self> {
        let valid = latitude.is_finite()
            && longitude.is_finite()
            && (-90.0..=90.0).contains(&latitude)
            && (-180.0..=180.0).contains(&longitude);
        valid.then_some(Self {
            latitude,
            longitude,
        })
    }

    /// Great-circle distance to `other` in kilometres (haversine, spherical Earth).
    pub fn distance_km(&self, other: &Coordinates) -> f64 {
        haversine(self, other, EARTH_RADIUS_KM)
    }
}

/// The haversine formula on a sphere of `radius`; numerically stable for small distances.
fn haversine(a: &Coordinates, b: &Coordinates, radius: f64) -> f64 {
    let (lat_a, lat_b) = (a.latitude.to_radians(), b.latitude.to_radians());
    let d_lat = lat_b - lat_a;
    let d_lon = (b.longitude - a.longitude).to_radians();
    let h = (d_lat / 2.0).sin().powi(2) + lat_a.cos() * lat_b.cos() * (d_lon / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points; asin would then be NaN.
    2.0 * radius * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(latitude: f64, longitude: f64) -> Coordinates {
        Coordinates::new(latitude, longitude).expect("valid test coordinates")
    }

    #[test]
    fn published_vector_nashville_to_los_angeles() {
        // Rosetta Code, "Haversine formula": BNA (36.12, -86.67) to LAX (33.94, -118.40) on a
        // sphere of radius 6372.8 km is 2887.2599506071106 km.
        let distance = haversine(&at(36.12, -86.67), &at(33.94, -118.40), 6372.8);
        assert!(
            (distance - 2_887.259_950_607_110_6).abs() < 1e-9,
            "{distance}"
        );
    }

    #[test]
    fn london_to_paris_is_about_344_km() {
        let distance = at(51.5074, -0.1278).distance_km(&at(48.8566, 2.3522));
        assert!((distance - 343.6).abs() < 1.0, "{distance}");
    }

    #[test]
    fn antipodes_are_half_a_circumference_apart() {
        let distance = at(0.0, 0.0).distance_km(&at(0.0, 180.0));
        assert!((distance - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn out_of_range_or_non_finite_points_are_refused() {
        for (lat, lon) in [
            (90.1, 0.0),
            (-90.1, 0.0),
            (0.0, 180.5),
            (0.0, -181.0),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            assert_eq!(Coordinates::new(lat, lon), None, "{lat} {lon}");
        }
        assert!(Coordinates::new(-90.0, 180.0).is_some());
    }

    fn point() -> impl Strategy<Value = Coordinates> {
        (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lon)| at(lat, lon))
    }

    proptest! {
        #[test]
        fn distance_is_a_metric_on_the_sphere(a in point(), b in point(), c in point()) {
            let ab = a.distance_km(&b);
            prop_assert!(a.distance_km(&a).abs() < 1e-6);
            prop_assert!((ab - b.distance_km(&a)).abs() < 1e-6);
            prop_assert!((0.0..=std::f64::consts::PI * EARTH_RADIUS_KM + 1e-6).contains(&ab));
            prop_assert!(a.distance_km(&c) <= ab + b.distance_km(&c) + 1e-6);
        }
    }
}

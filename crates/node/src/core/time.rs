//! Time in the core: the core reads no clock. The driver passes the monotonic time of each
//! input that needs one as a [`Mono`] (time since the driver started) and the wall clock as
//! milliseconds since the Unix epoch; ticks are counted by the driver too.

use std::time::Duration;

/// A point on the driver's monotonic clock: the time elapsed since the driver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mono(pub Duration);

impl Mono {
    /// The time from `earlier` to this point; zero if `earlier` is later.
    pub fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The point `by` after this one.
    #[must_use]
    pub fn after(self, by: Duration) -> Mono {
        Mono(self.0.saturating_add(by))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_never_goes_negative() {
        let start = Mono::default();
        let later = start.after(Duration::from_millis(7));
        assert_eq!(later.since(start), Duration::from_millis(7));
        assert_eq!(start.since(later), Duration::ZERO);
    }
}

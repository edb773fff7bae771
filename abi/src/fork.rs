//! How a domain learns it is a fork: its generation.
//!
//! A domain made by `spawn` or `image new` is generation 0; a fork of a
//! domain of generation N is generation N + 1. The generation lives in the
//! domain's WASI environment as [`GENERATION_VARIABLE`]`=N` (so a plain
//! WASI program sees it with `std::env::var` when it starts), and the
//! `amber.generation` import answers it at any time, so a running app sees
//! the moment it became a fork (guest-sdk's `amber::generation()`).

/// The environment variable holding a fork's generation.
pub const GENERATION_VARIABLE: &str = "AMBER_GENERATION";

/// The generation an environment (`KEY=VALUE` strings) says: the last
/// well-formed [`GENERATION_VARIABLE`] entry, 0 without one.
pub fn generation<'a>(environment: impl IntoIterator<Item = &'a str>) -> u64 {
    environment
        .into_iter()
        .filter_map(|entry| entry.strip_prefix(GENERATION_VARIABLE)?.strip_prefix('='))
        .filter_map(|value| value.parse().ok())
        .last()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_is_read_from_the_environment() {
        assert_eq!(generation([]), 0);
        assert_eq!(generation(["PATH=/", "AMBER_GENERATION=3"]), 3);
        assert_eq!(generation(["AMBER_GENERATIONS=4", "AMBER_GENERATION=x"]), 0);
        assert_eq!(generation(["AMBER_GENERATION=1", "AMBER_GENERATION=2"]), 2);
    }
}

//! What `_start` does around the app's `main`: panic reporting and exit codes.

/// Runs the app's `main` (through `run_main`) the way the vm expects.
///
/// A panic aborts (wasm has no unwinding here), which the vm sees as a trap;
/// the hook first sends the panic message to the log, so the reason is on the
/// console. A failing `main` (`Err` from `fn main() -> Result`) ends the domain
/// with its exit code; returning normally means exit code 0.
pub(crate) fn start(run_main: impl FnOnce() -> i32) {
    std::panic::set_hook(Box::new(|info| {
        crate::log(crate::Level::Error, &format!("panic: {info}"));
    }));
    let code = run_main();
    if code != 0 {
        crate::exit(code);
    }
}

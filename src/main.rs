fn main() {
    // Output piped into a reader that stops early (`arelax bench | head`) ends the process
    // quietly, as other Unix tools do, instead of a panic in the next print (Rust ignores
    // SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(arelax::cli::main());
}

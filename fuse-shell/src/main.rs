//! `wcfs`: a thin `main` over the `wcfs` library (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    wcfs::main()
}

fn main() {
    std::process::exit(arelax::cli::main());
}

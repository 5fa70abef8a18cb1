fn main() {
    let path = std::env::args().nth(1).unwrap();
    let src = std::fs::read_to_string(&path).unwrap();
    match flowspec::compile(&src) {
        Ok(p) => {
            for f in &p.flows {
                print!("{}", f.dump())
            }
        }
        Err(ds) => print!("{}", flowspec::diag::render_all(&ds, &path, &src)),
    }
}

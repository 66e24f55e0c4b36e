//! Marks the tests that need a real backend as ignored when its URL is not set (see `test_backends`).

fn main() {
    test_backends::declare();
}

//! Marks the tests that need a real backend as ignored when its URL is not set, and those that need
//! ffmpeg when it is missing (see `test_backends`).

fn main() {
    test_backends::declare();
    test_backends::declare_ffmpeg();
}

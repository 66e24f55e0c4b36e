//! For the build script of every crate with tests that need a real backend (PostgreSQL, Redis,
//! RabbitMQ): sets the cfg `no_postgres`, `no_redis` or `no_amqp` when the backend's test URL is
//! not set, so that such a test carries
//! `#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it")]` and shows as
//! `ignored`, with the reason, instead of passing without testing anything.
//!
//! The naming rule that goes with it: every test that needs a real backend has `postgres`, `redis`
//! or `amqp` in its name (its module path counts: `postgres::…`), which is how `.ci/run` runs those
//! tests, and only those, against the real servers.
//!
//! `AGORA_REQUIRE_BACKENDS=1` sets none of them: every backend test then runs, and fails when its
//! backend is missing. Libtest decides `ignore` at compile time, hence a build script; cargo
//! rebuilds the crate when one of these variables changes.

/// The cfg each backend's tests are ignored under, and the variable with its URL.
const BACKENDS: [(&str, &str); 3] = [
    ("no_postgres", "AGORA_TEST_POSTGRES_URL"),
    ("no_redis", "AGORA_TEST_REDIS_URL"),
    ("no_amqp", "AGORA_TEST_AMQP_URL"),
];

/// Prints the cargo instructions; call it from `build.rs`.
pub fn declare() {
    println!("cargo::rerun-if-env-changed=AGORA_REQUIRE_BACKENDS");
    let required = std::env::var("AGORA_REQUIRE_BACKENDS").is_ok_and(|v| v == "1");
    for (cfg, var) in BACKENDS {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        let set = std::env::var(var).is_ok_and(|url| !url.is_empty());
        if !set && !required {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// For crates whose tests run ffmpeg (the media service's): sets the cfg `no_ffmpeg` when
/// `ffmpeg -version` does not run, unless `AGORA_REQUIRE_BACKENDS=1`, so that such a test carries
/// `#[cfg_attr(no_ffmpeg, ignore = "install ffmpeg to run it")]` and shows as ignored instead of
/// passing without testing anything (and fails in CI, which installs ffmpeg). Its name has `ffmpeg` in it.
/// Call it from `build.rs` beside [`declare`].
pub fn declare_ffmpeg() {
    println!("cargo::rerun-if-env-changed=AGORA_REQUIRE_BACKENDS");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rustc-check-cfg=cfg(no_ffmpeg)");
    let required = std::env::var("AGORA_REQUIRE_BACKENDS").is_ok_and(|v| v == "1");
    let runs = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs && !required {
        println!("cargo::rustc-cfg=no_ffmpeg");
    }
}

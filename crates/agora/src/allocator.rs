//! The process's allocator: mimalloc, set up to hand memory back when a service idles.
//!
//! mimalloc because the proxy's hot path allocates small buffers per request, where glibc's
//! allocator showed up as ~15% of the gateway's CPU under load. Two of its defaults cost every
//! process memory it does not use (measured with `bench/footprint.sh`, see `bench/README.md`):
//!
//! * transparent huge pages: it advised the kernel to back its arena with 2 MiB pages, so each
//!   touched 2 MiB region became resident whole (8–12 MB per process for ~1 MB of live data).
//!   The workspace builds it with the `no_thp` feature, which leaves that advice out;
//! * eager commit: on Linux it commits its whole arena up front, and memory a process frees after
//!   starting (parsing, migrations, first requests) then stays resident (~4 MB per process).
//!   [`configure`] makes it commit on demand and decommit what is freed (after its purge delay),
//!   before the first allocation. `MIMALLOC_ARENA_EAGER_COMMIT=1` in the environment still wins.

/// The allocator of every `agora` process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (the same position in its v2 and v3 option lists).
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;

#[cfg(target_os = "linux")]
extern "C" {
    /// Sets an option's value unless the environment (`MIMALLOC_…`) sets it; from mimalloc's C API.
    fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Runs before `main`, and so before the first allocation, which reserves mimalloc's arena.
#[cfg(target_os = "linux")]
extern "C" fn configure() {
    // SAFETY: only stores a value in mimalloc's static option table, whose bounds the function checks;
    // no allocation has happened yet, so no other thread exists to race with.
    unsafe { mi_option_set_default(ARENA_EAGER_COMMIT, 0) };
}

/// Registers [`configure`] with the dynamic loader's initialisers (`.init_array`).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CONFIGURE: extern "C" fn() = configure;

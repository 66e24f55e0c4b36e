#!/usr/bin/env bash
# Media conversion (issue 19), everything through one `agora up` on 127.0.0.1:
#
#   1. a 60 s 720p test video: time from the upload's 202 to the mp3 being ready (the video's
#      status polled every 20 ms) vs `ffmpeg` alone on the same file with the same arguments;
#      median of RUNS (5); the overhead should be at most 10 %;
#   2. conversions per minute with 1 and 2 converters (BATCH uploads of that video at once);
#   3. upload throughput through the gateway for a BIG_MIB (1024) MiB file, with the peak RSS
#      of the gateway and media processes during it (it should stay flat: uploads stream).
#
#   bench/media.sh                 # AGORA=target/debug/agora to skip the release build
#   RUNS=3 BATCH=6 BIG_MIB=256 bench/media.sh
#
# Needs ffmpeg (with libmp3lame), curl and python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/bench/lib.sh"
RUNS="${RUNS:-5}"
BATCH="${BATCH:-10}"
BIG_MIB="${BIG_MIB:-1024}"
if [[ -z "${AGORA:-}" ]]; then
  (cd "$ROOT" && cargo build --release -p agora)
  AGORA="$ROOT/target/release/agora"
fi
command -v ffmpeg >/dev/null || die "ffmpeg is required (apt-get install -y --no-install-recommends ffmpeg)"
WORK="$(mktemp -d -t agora-bench-media.XXXXXX)"
trap 'stop_agora || true; rm -rf "$WORK" "$DATA_DIR"' EXIT

log "making a 60 s 720p test video"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc=duration=60:size=1280x720:rate=30 \
  -f lavfi -i sine=frequency=440:duration=60 -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac \
  -shortest "$WORK/720p.mp4"
log "test video: $(du -h "$WORK/720p.mp4" | cut -f1)"

measure() { # CONVERTERS: prints JSON lines from the client
  local converters=$1 port
  port="$(free_port)"
  start_agora "$port" --replicas "converter=$converters"
  python3 - "$port" "$WORK" "$RUNS" "$BATCH" "$BIG_MIB" "$converters" <<'PY'
import json, os, statistics, subprocess, sys, threading, time, urllib.request, uuid
port, work, runs, batch, big_mib, converters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
base = f"http://127.0.0.1:{port}"
def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return r.status, r.read()
name = "bench" + uuid.uuid4().hex[:8]
creds = json.dumps({"username": name, "password": "correct horse battery staple"}).encode()
call("POST", "/signup", creds, {"content-type": "application/json"})
token = json.loads(call("POST", "/login", creds, {"content-type": "application/json"})[1])["access_token"]
auth = {"authorization": f"Bearer {token}"}
video = open(os.path.join(work, "720p.mp4"), "rb").read()

def multipart(filename, size=None, chunk=None):
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return boundary, head, tail

def upload(data, filename="720p.mp4"):
    boundary, head, tail = multipart(filename)
    body = head + data + tail
    while True:
        try:
            status, answer = call("POST", "/upload", body, {**auth, "content-type": f"multipart/form-data; boundary={boundary}"})
            return json.loads(answer)["video_id"]
        except urllib.error.HTTPError as e:
            if e.code != 503:
                raise
            time.sleep(0.2)

def wait_done(vid, poll=0.02):
    while True:
        v = json.loads(call("GET", f"/videos/{vid}", headers=auth)[1])
        if v["status"] in ("done", "failed"):
            assert v["status"] == "done", v
            return v
        time.sleep(poll)

upload(video)  # warm up (and wait until a converter accepts)
if converters == 1:
    # ffmpeg alone with the converter's arguments (services/media/src/ffmpeg.rs, MP3_ARGS).
    alone, through = [], []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-y", "-i",
                        os.path.join(work, "720p.mp4"), "-vn", "-map", "0:a:0", "-c:a", "libmp3lame", "-q:a", "4",
                        "-f", "mp3", os.path.join(work, "alone.mp3")], check=True)
        alone.append(time.perf_counter() - t)
        vid = upload(video)
        t = time.perf_counter()
        wait_done(vid)
        through.append(time.perf_counter() - t)
    a, b = statistics.median(alone), statistics.median(through)
    print(json.dumps({"ffmpeg_alone_s": round(a, 3), "upload_202_to_ready_s": round(b, 3), "overhead_pct": round((b / a - 1) * 100, 1)}))

t = time.perf_counter()
ids = []
threads = [threading.Thread(target=lambda: ids.append(upload(video))) for _ in range(batch)]
[th.start() for th in threads]; [th.join() for th in threads]
for vid in ids:
    wait_done(vid, 0.1)
elapsed = time.perf_counter() - t
print(json.dumps({"converters": converters, "conversions": batch, "seconds": round(elapsed, 2), "per_minute": round(batch / elapsed * 60, 1)}))

if converters == 1 and big_mib > 0:
    # A big file with an MP4 header: streamed through the gateway to the blob store (ffprobe then refuses it).
    def rss(name):
        out = subprocess.run(["pgrep", "-f", f"agora serve {name}$"], capture_output=True, text=True).stdout.split()
        total = 0
        for pid in out:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total // 1024
    peaks = {"gateway": 0, "media": 0}
    before = {n: rss(n) for n in peaks}
    done = threading.Event()
    def sample():
        while not done.is_set():
            for n in peaks:
                peaks[n] = max(peaks[n], rss(n))
            time.sleep(0.2)
    sampler = threading.Thread(target=sample); sampler.start()
    boundary, head, tail = multipart("big.mp4")
    header = b"\0\0\0\x18ftypisom"
    size = big_mib * 1024 * 1024
    def body():
        yield head + header
        left = size - len(header)
        block = b"\7" * (1024 * 1024)
        while left > 0:
            n = min(left, len(block)); left -= n
            yield block[:n]
        yield tail
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=3600)
    t = time.perf_counter()
    conn.putrequest("POST", "/upload")
    conn.putheader("authorization", auth["authorization"])
    conn.putheader("content-type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("content-length", str(len(head) + size + len(tail)))
    conn.endheaders()
    for piece in body():
        conn.send(piece)
    resp = conn.getresponse(); resp.read()
    elapsed = time.perf_counter() - t
    done.set(); sampler.join()
    print(json.dumps({"upload_mib": big_mib, "status": resp.status, "seconds": round(elapsed, 2),
                      "mib_per_s": round(big_mib / elapsed, 1), "rss_mib_before": before, "rss_mib_peak": peaks}))
PY
  stop_agora
}

log "$(nproc) cores; agora: $AGORA"
measure 1
measure 2

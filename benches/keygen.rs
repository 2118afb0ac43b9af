//! Key-generation timings per key family, beside `openssl genpkey` on the same machine.
//!
//! `cargo bench --bench keygen` runs the full benchmark; `KEYGEN_BENCH_QUICK=1` (or the
//! argument `--quick`) runs a few iterations only, so CI can check that it still works.
//! A plain `main` rather than a bench framework: no extra dependencies, and RSA generation is
//! so slow and randomized that a fixed number of runs with order statistics says enough.

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jwt_key_rotator::keys::Algorithm::{self, *};
use jwt_key_rotator::keys::RsaKeySize::{self, *};
use jwt_key_rotator::keys::generate;

const OPENSSL: &str = "/usr/bin/openssl";
/// Stop a kind after this long (once it has `MIN_RUNS`), so RSA-4096 cannot run away.
const TIME_CAP: Duration = Duration::from_secs(60);
const MIN_RUNS: usize = 5;

/// Key kinds: (name, algorithm, RSA size, runs, `openssl genpkey` options or none). Cost
/// depends only on the family, so RS256 stands for every RS*/PS* algorithm.
type Kind = (
    &'static str,
    Algorithm,
    Option<RsaKeySize>,
    usize,
    &'static [&'static str],
);
const RSA_2048: &[&str] = &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
const RSA_4096: &[&str] = &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"];
const P_256: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
const KINDS: [Kind; 9] = [
    ("RSA-2048", RS256, Some(Bits2048), 31, RSA_2048),
    ("RSA-3072", RS256, Some(Bits3072), 15, &[]),
    ("RSA-4096", RS256, Some(Bits4096), 9, RSA_4096),
    ("P-256", ES256, None, 1001, P_256),
    ("P-384", ES384, None, 1001, &[]),
    ("Ed25519", EdDSA, None, 1001, &[]),
    ("HMAC-256", HS256, None, 1001, &[]),
    ("HMAC-384", HS384, None, 1001, &[]),
    ("HMAC-512", HS512, None, 1001, &[]),
];

/// Times `f` up to `runs` times, stopping early at `TIME_CAP` once `MIN_RUNS` are done.
fn time_runs(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let start = Instant::now();
    let mut times = Vec::with_capacity(runs);
    while times.len() < runs && (times.len() < MIN_RUNS || start.elapsed() < TIME_CAP) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times
}

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    p90: Duration,
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    let n = times.len();
    Stats {
        // Runs may be even after the time cap: average the two middle ones then.
        median: (times[(n - 1) / 2] + times[n / 2]) / 2,
        min: times[0],
        max: times[n - 1],
        // Nearest-rank p90: with few runs this is close to the max, as it should be.
        p90: times[(n * 9).div_ceil(10) - 1],
    }
}

/// µs below a millisecond, ms above (RSA stays in ms even past a second, to compare easily).
fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// Four right-aligned cells: median, min, max, p90.
fn cells(c: [String; 4]) -> String {
    format!("{:>11} {:>11} {:>11} {:>11}", c[0], c[1], c[2], c[3])
}

fn row(s: &Stats) -> String {
    cells([s.median, s.min, s.max, s.p90].map(fmt))
}

/// Runs openssl once; false if it could not be started or failed.
fn openssl(args: &[&str]) -> bool {
    Command::new(OPENSSL)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null()) // genpkey prints RSA progress dots on stderr
        .status()
        .is_ok_and(|s| s.success())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    // cargo passes `--bench` to harness-less benches; only `--quick` means anything here.
    let quick = std::env::var("KEYGEN_BENCH_QUICK").is_ok_and(|v| v == "1")
        || std::env::args().any(|a| a == "--quick");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let build = if cfg!(debug_assertions) {
        "DEBUG build: numbers meaningless"
    } else {
        "release build"
    };
    let mode = if quick { ", QUICK smoke run" } else { "" };
    println!("keygen benchmark: {build}{mode}");
    println!("machine: nproc={cpus}, cpu: {}", cpu_model());

    let version = Command::new(OPENSSL).arg("version").output();
    let have_openssl = version.as_ref().is_ok_and(|o| o.status.success());
    match &version {
        Ok(o) if have_openssl => println!("openssl: {}", String::from_utf8_lossy(&o.stdout).trim()),
        _ => println!("openssl: {OPENSSL} not found or not working; skipping the comparison"),
    }
    let head = |p: &str| cells(["median", "min", "max", "p90"].map(|c| format!("{p}{c}")));
    println!(
        "\n{:<9} {:>5} | {} | {:>5} | {}",
        "kind",
        "runs",
        head(""),
        "runs",
        head("ossl ")
    );
    println!("{}", "-".repeat(128));

    for (name, alg, rsa_size, runs, ossl_opts) in KINDS {
        let runs = match (quick, rsa_size) {
            (false, _) => runs,
            (true, Some(_)) => 2,
            (true, None) => 11,
        };
        let gen_once = || black_box(generate(black_box(alg), black_box(rsa_size)).expect("keygen"));
        // One untimed call first: the first RNG use and page faults are not generation cost.
        gen_once();
        let ours = time_runs(runs, || drop(gen_once()));
        let n = ours.len();
        let mut line = format!("{name:<9} {n:>5} | {}", row(&stats(ours)));
        if have_openssl && !ossl_opts.is_empty() {
            let args = [&["genpkey"], ossl_opts, &["-out", "/dev/null"]].concat();
            // Same number of runs as ours got, so both sides see similar machine noise.
            let theirs = time_runs(n, || assert!(openssl(&args), "openssl {args:?} failed"));
            line += &format!(" | {:>5} | {}", theirs.len(), row(&stats(theirs)));
        }
        println!("{line}");
    }

    if have_openssl {
        // openssl timings include fork/exec and library start-up; this is the part to subtract.
        let runs = if quick { 5 } else { 101 };
        let s = stats(time_runs(runs, || assert!(openssl(&["version"]))));
        let (median, min, p90) = (fmt(s.median), fmt(s.min), fmt(s.p90));
        println!(
            "\nopenssl start-up (`openssl version`, {runs} runs): median {median}, min {min}, p90 {p90}"
        );
    }
    println!(
        "\nours include PEM/JWK encoding and the RFC 7638 thumbprint; openssl's include writing PEM"
    );
}

//! The read-bandwidth probe behind every CPU floor (`spedec bench-kernels`).
//!
//! A floor is only honest if the probe reads as fast as the machine can: a single-stream
//! loop understates it (on a 2-vCPU Sapphire Rapids guest such a loop read 20–22 GB/s where a
//! tuned one reads 30–33 GB/s), and a decode step compared with too low a floor looks closer
//! to it than it is. So the probe tries a few read patterns and keeps the best:
//!
//! - the buffer is 2 MiB aligned and advised for transparent huge pages (as the packed
//!   weights are), and every page is touched before timing;
//! - every thread reads its share as `streams` independent sequential streams side by side,
//!   one 64-byte line from each in turn (more streams keep more lines in flight);
//! - optionally with a software prefetch `prefetch` bytes ahead in every stream;
//! - loads are 256 bits wide on AVX2 hosts (folded with xor so nothing is optimised away).
//!
//! [`Probe::best`] times every setting (a few passes each, interleaved so a drifting shared
//! host hits them alike) and reports the setting with the best median, with all settings'
//! medians for the record.

use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;
use spedec_neox::cpu::packed::HugeBuffer;
use spedec_report::kernels::{ProbeDetails, ProbeSetting, ProbeTried};
use spedec_report::Summary;

/// Bytes read per stream per turn: one cache line.
const LINE: usize = 64;

/// The settings [`Probe::best`] tries: streams per thread × prefetch distance.
pub const SETTINGS: &[ProbeSetting] = &[
    ProbeSetting {
        streams: 1,
        prefetch_bytes: 0,
    },
    ProbeSetting {
        streams: 4,
        prefetch_bytes: 0,
    },
    ProbeSetting {
        streams: 4,
        prefetch_bytes: 1024,
    },
    ProbeSetting {
        streams: 8,
        prefetch_bytes: 0,
    },
    ProbeSetting {
        streams: 8,
        prefetch_bytes: 1024,
    },
    ProbeSetting {
        streams: 8,
        prefetch_bytes: 2048,
    },
];

/// A buffer far larger than the caches, read by every thread of the current rayon pool.
pub struct Probe {
    buf: HugeBuffer,
}

impl Probe {
    /// A probe over `bytes` bytes (rounded down to whole lines per stream when read).
    pub fn new(bytes: usize) -> Result<Self> {
        let mut buf = HugeBuffer::zeroed(bytes)?;
        buf.as_mut_slice().fill(1); // touch every page before timing
        Ok(Probe { buf })
    }

    /// One timed pass with `setting`, in GB/s (bytes actually read / wall time).
    pub fn pass(&self, setting: ProbeSetting) -> f64 {
        let data = self.buf.as_slice();
        let threads = rayon::current_num_threads().max(1);
        let chunk = data.len().div_ceil(threads);
        let unit = setting.streams * LINE;
        let bytes: usize = data.chunks(chunk).map(|c| c.len() / unit * unit).sum();
        let t = Instant::now();
        let folded: u64 = data
            .par_chunks(chunk)
            .map(|c| read_streams(c, setting))
            .reduce(|| 0, |a, b| a ^ b);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(folded);
        bytes as f64 / secs / 1e9
    }

    /// Times every setting of [`SETTINGS`] `passes` times (after one untimed pass each), in
    /// interleaved rounds, and returns the best median's passes (GB/s) and the details.
    pub fn best(&self, passes: usize) -> (Summary, ProbeDetails) {
        let passes = passes.max(1);
        for &s in SETTINGS {
            self.pass(s);
        }
        let mut samples = vec![Vec::with_capacity(passes); SETTINGS.len()];
        for _ in 0..passes {
            for (i, &s) in SETTINGS.iter().enumerate() {
                samples[i].push(self.pass(s));
            }
        }
        let summaries: Vec<Summary> = samples
            .iter()
            .map(|v| Summary::of(v).expect("passes >= 1"))
            .collect();
        let best = (0..SETTINGS.len())
            .max_by(|&a, &b| summaries[a].median.total_cmp(&summaries[b].median))
            .expect("SETTINGS is not empty");
        let details = ProbeDetails {
            setting: SETTINGS[best],
            transparent_huge_pages: transparent_huge_pages(),
            buffer_bytes: self.buf.as_slice().len(),
            passes,
            tried: SETTINGS
                .iter()
                .zip(&summaries)
                .map(|(&setting, m)| ProbeTried {
                    setting,
                    median_gb_s: m.median,
                })
                .collect(),
        };
        (summaries[best], details)
    }
}

/// The kernel's transparent-huge-page mode (`always`, `madvise`, `never`), where it says.
fn transparent_huge_pages() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// Folds `chunk` read as `setting.streams` streams side by side.
fn read_streams(chunk: &[u8], setting: ProbeSetting) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: avx2 was detected just above.
        return unsafe { avx2::read_streams(chunk, setting) };
    }
    read_streams_portable(chunk, setting)
}

/// The streams of `chunk`: `streams` equal slices of whole lines.
fn split(chunk: &[u8], streams: usize) -> (usize, impl Iterator<Item = &[u8]>) {
    let per_stream = chunk.len() / streams / LINE * LINE;
    (
        per_stream,
        chunk.chunks_exact(per_stream.max(1)).take(streams),
    )
}

fn read_streams_portable(chunk: &[u8], setting: ProbeSetting) -> u64 {
    let (per_stream, streams) = split(chunk, setting.streams);
    if per_stream == 0 {
        return 0;
    }
    let streams: Vec<&[u8]> = streams.collect();
    let mut acc = [0u64; 8];
    for at in (0..per_stream).step_by(LINE) {
        for s in &streams {
            for (l, a) in acc.iter_mut().enumerate() {
                let i = at + l * 8;
                *a ^= u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
            }
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{split, ProbeSetting, LINE};

    /// Two 256-bit loads per line, one accumulator pair per stream slot (up to 8), and a
    /// T0 prefetch `prefetch_bytes` ahead when asked (never past the stream's end).
    #[target_feature(enable = "avx2")]
    pub unsafe fn read_streams(chunk: &[u8], setting: ProbeSetting) -> u64 {
        let (per_stream, streams) = split(chunk, setting.streams);
        if per_stream == 0 {
            return 0;
        }
        let ptrs: Vec<*const u8> = streams.map(|s| s.as_ptr()).collect();
        let ahead = setting.prefetch_bytes;
        let mut acc = [_mm256_setzero_si256(); 16];
        let mut at = 0;
        while at < per_stream {
            for (s, &p) in ptrs.iter().enumerate() {
                // SAFETY: `at + LINE <= per_stream`, the stream's length; loads are unaligned.
                let line = p.add(at);
                if ahead > 0 && at + ahead < per_stream {
                    _mm_prefetch::<_MM_HINT_T0>(line.add(ahead) as *const i8);
                }
                let lo = _mm256_loadu_si256(line as *const __m256i);
                let hi = _mm256_loadu_si256(line.add(32) as *const __m256i);
                let slot = (s % 8) * 2;
                acc[slot] = _mm256_xor_si256(acc[slot], lo);
                acc[slot + 1] = _mm256_xor_si256(acc[slot + 1], hi);
            }
            at += LINE;
        }
        let mut all = _mm256_setzero_si256();
        for a in acc {
            all = _mm256_xor_si256(all, a);
        }
        let mut out = [0u64; 4];
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, all);
        out.iter().fold(0, |a, b| a ^ b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting reads every byte of every stream exactly once: the xor fold of a
    /// buffer whose lines differ equals the fold computed directly.
    #[test]
    fn every_setting_reads_each_stream_line_once() {
        let len = 8 * LINE * 37;
        let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
        for &s in SETTINGS {
            let (per_stream, _) = split(&data, s.streams);
            let covered = &data[..per_stream * s.streams];
            let mut expect = [0u64; 8];
            for (i, word) in covered.chunks_exact(8).enumerate() {
                expect[i % 8] ^= u64::from_le_bytes(word.try_into().unwrap());
            }
            let expect = expect.iter().fold(0, |a, b| a ^ b);
            assert_eq!(read_streams_portable(&data, s), expect, "{s:?} portable");
            assert_eq!(read_streams(&data, s), expect, "{s:?} dispatched");
        }
    }

    #[test]
    fn the_best_setting_is_the_one_with_the_best_median() {
        let probe = Probe::new(8 << 20).unwrap();
        let (gb_s, r) = probe.best(2);
        assert_eq!(r.tried.len(), SETTINGS.len());
        let best = r
            .tried
            .iter()
            .map(|t| t.median_gb_s)
            .fold(f64::MIN, f64::max);
        assert_eq!(gb_s.median, best);
        assert!(r
            .tried
            .iter()
            .any(|t| t.setting == r.setting && t.median_gb_s == best));
        assert!(gb_s.median > 0.0);
    }
}

//! How the sockets are split over worker processes: how many workers, and which global
//! socket indices each one owns.

use std::{fmt, ops::Range, str::FromStr};

/// `--workers`: a number, or `auto` (as few as fit under the per-process open-file limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(usize),
}

impl FromStr for Workers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Workers::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Workers::Count(n)),
            _ => Err(format!(
                "{s:?} is neither \"auto\" nor a number of at least 1"
            )),
        }
    }
}

/// The sockets one worker owns: global indices `offset..offset + count`. Indices are global
/// so that `--session-prefix` sessions (`<prefix>-<i>`), URL and source-address turns are
/// the same whatever the number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub offset: usize,
    pub count: usize,
}

impl Slice {
    pub fn indices(&self) -> Range<usize> {
        self.offset..self.offset + self.count
    }
}

/// As passed to a worker on its command line: `OFFSET:COUNT`.
impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.offset, self.count)
    }
}

impl FromStr for Slice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |part: Option<&str>| part.and_then(|p| p.parse::<usize>().ok());
        let mut parts = s.split(':');
        match (parse(parts.next()), parse(parts.next()), parts.next()) {
            (Some(offset), Some(count), None) => Ok(Slice { offset, count }),
            _ => Err(format!("{s:?} is not OFFSET:COUNT")),
        }
    }
}

/// Splits `sockets` into `workers` contiguous slices whose sizes differ by at most one.
pub fn slices(sockets: usize, workers: usize) -> Vec<Slice> {
    let workers = workers.max(1);
    let (base, extra) = (sockets / workers, sockets % workers);
    let mut offset = 0;
    (0..workers)
        .map(|k| {
            let count = base + usize::from(k < extra);
            let slice = Slice { offset, count };
            offset += count;
            slice
        })
        .collect()
}

/// The fewest workers that keep each at or under `per_process` sockets.
pub fn auto_workers(sockets: usize, per_process: usize) -> usize {
    sockets.div_ceil(per_process.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_socket_once_in_order_and_evenly() {
        for (sockets, workers) in [(10, 3), (100_000, 6), (3, 3), (7, 1), (25_000, 2)] {
            let s = slices(sockets, workers);
            assert_eq!(s.len(), workers);
            let indices: Vec<usize> = s.iter().flat_map(Slice::indices).collect();
            assert_eq!(
                indices,
                (0..sockets).collect::<Vec<_>>(),
                "{sockets}/{workers}"
            );
            let sizes: Vec<usize> = s.iter().map(|s| s.count).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{sizes:?}");
        }
        assert_eq!(
            slices(10, 3),
            vec![
                Slice {
                    offset: 0,
                    count: 4
                },
                Slice {
                    offset: 4,
                    count: 3
                },
                Slice {
                    offset: 7,
                    count: 3
                },
            ]
        );
    }

    #[test]
    fn auto_uses_as_few_workers_as_fit_the_limit() {
        assert_eq!(auto_workers(100, 19_936), 1);
        assert_eq!(auto_workers(19_936, 19_936), 1);
        assert_eq!(auto_workers(19_937, 19_936), 2);
        assert_eq!(auto_workers(25_000, 19_936), 2);
        assert_eq!(auto_workers(100_000, 19_936), 6);
    }

    #[test]
    fn slices_and_worker_counts_parse_and_print() {
        let slice: Slice = "4:3".parse().unwrap();
        assert_eq!(
            slice,
            Slice {
                offset: 4,
                count: 3
            }
        );
        assert_eq!(slice.to_string(), "4:3");
        assert_eq!(slice.indices(), 4..7);
        for bad in ["4", "4:", ":3", "a:3", "1:2:3", "-1:2"] {
            assert!(bad.parse::<Slice>().is_err(), "{bad}");
        }
        assert_eq!("auto".parse(), Ok(Workers::Auto));
        assert_eq!("3".parse(), Ok(Workers::Count(3)));
        assert!("0".parse::<Workers>().is_err());
        assert!("many".parse::<Workers>().is_err());
    }
}

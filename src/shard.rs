//! Splitting one large matrix across N replicas: `--shard I/N` keeps the cells whose stable key
//! (64-bit FNV-1a of `target/tenant`, [`crate::matrix::CellId::key`]) is `I` modulo `N`. With
//! `--shard-by DIM`, the key is the FNV-1a of the cell's value of dimension DIM instead, so all
//! cells of one value (one tenant, one zone) are on one replica, whose correlator then sees
//! that scope whole and can name it; the fleet verdict over shards is Prometheus's
//! (`deploy/prometheus/crossprobe-shard-rules.yml`).
//!
//! Every replica computes the same split from the same configuration without talking to the
//! others, so each cell is probed by exactly one replica. A cell's shard depends only on its id
//! and `N`: adding or removing other cells never moves it; changing `N` does. Each replica's
//! correlator then sees only its own cells; correlation across shards happens in Prometheus
//! (`deploy/prometheus/crossprobe-vantage-rules.yml`), not in the daemon.

use std::fmt;
use std::str::FromStr;

use crate::matrix::{fnv1a, Cell, Matrix};

/// One replica's part of the matrix: shard `index` of `count`, split by cell or by the values of
/// one dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
    by: Option<String>,
}

/// Why `--shard` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("\"{0}\" is not I/N (e.g. \"0/3\" for the first of three shards)")]
    Syntax(String),
    #[error("the number of shards must be at least 1, not 0")]
    NoShards,
    #[error("shard index {index} is out of range: with {count} shards it must be 0 to {}", count - 1)]
    IndexOutOfRange { index: u64, count: u64 },
    #[error("shard {shard} has none of the matrix's {cells} cells; use fewer shards")]
    Empty { shard: Shard, cells: usize },
    #[error("--shard-by {by}: not a dimension of the matrix ({})", dimensions.join(", "))]
    UnknownDimension { by: String, dimensions: Vec<String> },
}

impl Shard {
    /// Shard `index` of `count`; `index` must be below `count`.
    pub fn new(index: u64, count: u64) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shard { index, count, by: None })
    }

    /// The same shard, keeping each value of dimension `by` on one replica.
    pub fn by(self, by: Option<String>) -> Shard {
        Shard { by, ..self }
    }

    /// The whole matrix: what a daemon without `--shard` probes.
    pub const ALL: Shard = Shard { index: 0, count: 1, by: None };

    /// I: which part of the matrix this replica probes, from 0.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// N: how many replicas share the matrix.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The dimension whose values are kept whole (`--shard-by`), if any.
    pub fn dimension(&self) -> Option<&str> {
        self.by.as_deref()
    }

    /// This shard's cells of `matrix`, in matrix order. A shard without cells is refused: a
    /// replica that probes nothing is a mistake in N, not a deployment.
    pub fn part(&self, matrix: &Matrix) -> Result<Matrix, ShardError> {
        let by = match &self.by {
            None => None,
            Some(d) => Some(matrix.dimension_index(d).ok_or_else(|| ShardError::UnknownDimension {
                by: d.clone(),
                dimensions: matrix.dimensions().to_vec(),
            })?),
        };
        let key = |c: &Cell| by.map_or(c.key, |i| fnv1a(&c.labels[i]));
        let part = matrix.filtered(|c| key(c) % self.count == self.index);
        if part.is_empty() {
            return Err(ShardError::Empty { shard: self.clone(), cells: matrix.len() });
        }
        Ok(part)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)?;
        match &self.by {
            Some(by) => write!(f, " by {by}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// `I/N` with decimal digits only: `0/3`, `2/3`.
    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(s.to_owned());
        let (i, n) = s.split_once('/').ok_or_else(syntax)?;
        let number = |v: &str| {
            let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| v.parse::<u64>().ok()).flatten().ok_or_else(syntax)
        };
        Shard::new(number(i)?, number(n)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::config::ValidatedConfig;
    use crate::matrix::{CellId, Matrix};

    fn production() -> ValidatedConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/production.toml");
        ValidatedConfig::load(&path).expect("the production example is valid")
    }

    #[test]
    fn parses_i_of_n_and_refuses_the_rest() {
        type Parsed = Result<(u64, u64), ShardError>;
        let cases: [(&str, Parsed); 11] = [
            ("0/1", Ok((0, 1))),
            ("2/3", Ok((2, 3))),
            ("15/16", Ok((15, 16))),
            ("3/3", Err(ShardError::IndexOutOfRange { index: 3, count: 3 })),
            ("0/0", Err(ShardError::NoShards)),
            ("1", Err(ShardError::Syntax("1".into()))),
            ("1/", Err(ShardError::Syntax("1/".into()))),
            ("-1/3", Err(ShardError::Syntax("-1/3".into()))),
            ("+1/3", Err(ShardError::Syntax("+1/3".into()))),
            (" 1/3", Err(ShardError::Syntax(" 1/3".into()))),
            ("1/3/5", Err(ShardError::Syntax("1/3/5".into()))),
        ];
        for (input, expected) in cases {
            let got = input.parse::<Shard>().map(|s| (s.index(), s.count()));
            assert_eq!(got, expected, "parsing {input:?}");
        }
        assert_eq!("2/3".parse::<Shard>().unwrap().to_string(), "2/3");
        assert_eq!(
            ShardError::IndexOutOfRange { index: 3, count: 3 }.to_string(),
            "shard index 3 is out of range: with 3 shards it must be 0 to 2"
        );
    }

    #[test]
    fn one_shard_is_the_whole_matrix() {
        let config = production();
        let all = config.clone().shard(&Shard::ALL).unwrap();
        assert_eq!(all.matrix, config.matrix);
    }

    #[test]
    fn an_empty_shard_is_refused() {
        let config = production();
        let count = 4 * config.matrix.len() as u64;
        let empty = (0..count)
            .map(|i| Shard::new(i, count).unwrap())
            .find(|s| !config.matrix.cells().iter().any(|c| c.key % count == s.index()))
            .expect("more shards than cells leaves some empty");
        let err = config.clone().shard(&empty).unwrap_err();
        assert_eq!(err, ShardError::Empty { shard: empty, cells: config.matrix.len() });
        let unknown = Shard::new(0, 2).unwrap().by(Some("zone".into()));
        let err = config.clone().shard(&unknown).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--shard-by zone: not a dimension of the matrix (az, tenant, protocol, broker, network)"
        );
    }

    /// Which shards (as indices) hold each cell id, for `count` shards of `matrix`.
    fn owners(config: &ValidatedConfig, count: u64) -> BTreeMap<String, Vec<u64>> {
        let mut owners: BTreeMap<String, Vec<u64>> =
            config.matrix.cells().iter().map(|c| (c.id.to_string(), vec![])).collect();
        for i in 0..count {
            let Ok(part) = config.clone().shard(&Shard::new(i, count).unwrap()) else { continue };
            assert_eq!(part.matrix.dimensions(), config.matrix.dimensions());
            for cell in part.matrix.cells() {
                owners.get_mut(cell.id.as_str()).expect("a shard holds only cells of the matrix").push(i);
            }
        }
        owners
    }

    proptest! {
        /// The N shards of the production example partition its matrix: every cell in exactly
        /// one shard, each cell in the shard its key names, nothing invented.
        #[test]
        fn shards_partition_the_production_matrix(count in 1u64..16) {
            let config = production();
            for (id, shards) in owners(&config, count) {
                prop_assert_eq!(shards.len(), 1, "cell {} is in shards {:?} of {}", id, shards, count);
                let (target, tenant) = id.split_once('/').unwrap();
                prop_assert_eq!(shards[0], CellId::new(target, tenant).key() % count);
            }
        }

        /// The same for arbitrary cell ids: a shard keeps its cells' order and labels.
        #[test]
        fn shards_partition_any_matrix(
            ids in proptest::collection::btree_set(("[a-z0-9-]{1,12}", "[a-z]{1,8}"), 1..60),
            count in 1u64..16,
        ) {
            let labels = ids.iter().map(|(t, n)| vec![t.clone(), n.clone()]).collect();
            let matrix = Matrix::from_labels(vec!["broker".into(), "tenant".into()], labels);
            let mut seen = 0;
            for i in 0..count {
                let part = Shard::new(i, count).unwrap().part(&matrix).map(|m| m.cells().to_vec()).unwrap_or_default();
                let expected: Vec<_> = matrix.cells().iter().filter(|c| c.key % count == i).cloned().collect();
                prop_assert_eq!(&part, &expected);
                seen += part.len();
            }
            prop_assert_eq!(seen, matrix.len());
        }

        /// `--shard-by DIM`: every value of DIM is on exactly one replica, with all its cells,
        /// and the replicas together probe every cell once.
        #[test]
        fn shard_by_keeps_each_value_of_the_dimension_on_one_replica(
            cells in proptest::collection::btree_set(("[a-c]", "[a-z]{1,6}", "k|r"), 1..80),
            count in 1u64..8,
            dimension in 0usize..3,
        ) {
            let dims = ["az", "tenant", "broker"].map(String::from).to_vec();
            let labels = cells.iter().map(|(a, t, b)| vec![a.clone(), t.clone(), format!("{b}-{a}")]).collect();
            let matrix = Matrix::from_labels(dims.clone(), labels);
            let mut replicas: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            let mut seen = 0;
            for i in 0..count {
                let shard = Shard::new(i, count).unwrap().by(Some(dims[dimension].clone()));
                let Ok(part) = shard.part(&matrix) else { continue };
                seen += part.len();
                for c in part.cells() {
                    let on = replicas.entry(c.labels[dimension].clone()).or_default();
                    if !on.contains(&i) {
                        on.push(i);
                    }
                }
            }
            prop_assert_eq!(seen, matrix.len());
            for (value, on) in replicas {
                prop_assert_eq!(on.len(), 1, "{}={} is on replicas {:?} of {}", dims[dimension], value, on, count);
            }
        }
    }
}

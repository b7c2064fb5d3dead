//! The scope index: ids, cells and canonical scopes against their definitions, depth caps and
//! pruning.

use super::enumerate::{for_each_group, for_each_group_hashed, Layout};
use super::*;
use crate::correlator::testkit::{grid, nested};

#[test]
fn scopes_of_the_grid() {
    let m = grid();
    let index = ScopeIndex::new(&m).unwrap();
    // Every subset of (az, tenant, protocol, broker) fixed to a cell's values, deduplicated:
    // {} 1, az 3, tenant 4, protocol 2, broker 6, az+tenant 12, az+protocol 6,
    // az+broker 6, tenant+protocol 8, tenant+broker 24, protocol+broker 6, then the
    // triples 24 + 6 + 24 + 24 and the cells 24.
    assert_eq!(index.scope_count(), 1 + 3 + 4 + 2 + 6 + 12 + 6 + 6 + 8 + 24 + 6 + 24 + 6 + 24 + 24 + 24);
    assert_eq!(index.describe(0), "*", "the coarsest scope comes first");
    assert_eq!(index.total(0), 24);
    let zone_b = index.find(&[("az", "b")]).unwrap();
    assert_eq!((index.total(zone_b), index.fixed_count(zone_b)), (8, 1));
    assert!(index.is_canonical(zone_b));
    assert!(index.cells(zone_b).iter().all(|&c| m.cells()[c as usize].labels[0] == "b"));
    // A broker is its zone and protocol: only the broker stands for those cells.
    let broker = index.find(&[("broker", "k-b")]).unwrap();
    let zone_protocol = index.find(&[("az", "b"), ("protocol", "kafka")]).unwrap();
    assert_eq!(index.cells(broker), index.cells(zone_protocol));
    assert!(index.is_canonical(broker) && !index.is_canonical(zone_protocol));
    assert_eq!(index.find(&[("az", "d")]), None);
    assert_eq!(index.describe(index.find(&[("tenant", "acme"), ("az", "b")]).unwrap()), "az=b&tenant=acme");
    // Each cell lies in 2^4 scopes, the global one first, indexed by the mask of fixed
    // dimensions.
    assert_eq!(index.scopes_of(5).len(), 16);
    assert_eq!(index.scopes_of(5)[0], 0);
    let cell = index.cells(zone_b)[0] as usize;
    assert_eq!(index.mask(zone_b), 1);
    assert_eq!(index.scopes_of(cell)[index.mask(zone_b)], zone_b);
    assert_eq!(index.mask(broker), 8);
    // Of the 16 scopes that hold the same cells in pairs, only one of each pair counts.
    assert!(index.canonical_count() < index.scope_count());
}

/// The sort key of a scope id: fixed dimensions, then per dimension the value id (a free
/// dimension after every value).
fn id_key(index: &ScopeIndex, s: ScopeId) -> (u32, Vec<u32>) {
    let d = index.dimensions().len();
    (index.fixed_count(s), (0..d).map(|i| index.fixed_value(s, i).unwrap_or(u32::MAX)).collect())
}

#[test]
fn ids_cells_and_canonical_scopes_follow_their_definitions() {
    for m in [grid(), nested()] {
        let index = ScopeIndex::new(&m).unwrap();
        let d = m.dimensions().len();
        for s in 1..index.scope_count() as ScopeId {
            assert!(id_key(&index, s - 1) < id_key(&index, s), "ids ascend in key order at {s}");
        }
        for cell in 0..m.len() {
            for mask in 0..1usize << d {
                let s = index.scope_of(cell, mask).unwrap();
                assert_eq!(index.scopes_of(cell)[mask], s);
                assert_eq!(index.mask(s), mask);
                let want: Vec<u32> = (0..m.len() as u32)
                    .filter(|&c| {
                        (0..d).all(|i| {
                            mask & (1 << i) == 0
                                || m.cells()[c as usize].labels[i] == m.cells()[cell].labels[i]
                        })
                    })
                    .collect();
                assert_eq!(index.cells(s), want.as_slice());
            }
        }
        for s in 0..index.scope_count() as ScopeId {
            let first =
                (0..index.scope_count() as ScopeId).find(|&t| index.cells(t) == index.cells(s)).unwrap();
            assert_eq!(index.is_canonical(s), first == s, "{}", index.describe(s));
        }
    }
}

#[test]
fn a_depth_capped_index_keeps_the_shallow_scopes_and_the_cells() {
    let m = nested();
    let full = ScopeIndex::new(&m).unwrap();
    let capped = ScopeIndex::with_depth(&m, 2).unwrap();
    assert!(capped.memberships() < full.memberships());
    for cell in 0..m.len() {
        for mask in 0..16usize {
            let kept = mask.count_ones() <= 2 || mask == 15;
            assert_eq!(capped.indexes_mask(mask), kept);
            let f = full.scope_of(cell, mask).unwrap();
            match capped.scope_of(cell, mask) {
                Some(c) => {
                    assert!(kept);
                    assert_eq!((capped.cells(c), capped.describe(c)), (full.cells(f), full.describe(f)));
                }
                None => assert!(!kept),
            }
        }
    }
    for s in 1..capped.scope_count() as ScopeId {
        assert!(id_key(&capped, s - 1) < id_key(&capped, s));
    }
    // Canonical among the indexed scopes: the first with the same cells.
    for s in 0..capped.scope_count() as ScopeId {
        let first =
            (0..capped.scope_count() as ScopeId).find(|&t| capped.cells(t) == capped.cells(s)).unwrap();
        assert_eq!(capped.is_canonical(s), first == s, "{}", capped.describe(s));
    }
    assert_eq!(capped.find(&[("az", "b"), ("tenant", "acme"), ("protocol", "kafka")]), None, "too deep");
    let cell = capped.find(&[("az", "b"), ("tenant", "acme"), ("protocol", "kafka"), ("broker", "k-b1")]);
    assert_eq!(cell.map(|s| capped.total(s)), Some(1));
}

#[test]
fn a_pruned_index_keeps_what_it_is_asked_to_and_counts_every_cell_set() {
    let m = nested();
    let full = ScopeIndex::new(&m).unwrap();
    assert_eq!(full.cell_sets(), full.canonical_count());
    let capped = ScopeIndex::with_depth(&m, 2).unwrap();
    assert_eq!(capped.cell_sets(), capped.canonical_count());
    // Keep scopes of at least 4 cells (more cells, still kept: as a gain bound behaves).
    let pruned = ScopeIndex::pruned(&m, 4, |cells| cells.len() >= 4).unwrap();
    assert_eq!(pruned.cell_sets(), full.cell_sets(), "every set counts, kept or not");
    for cell in 0..m.len() {
        for mask in 0..16usize {
            let f = full.scope_of(cell, mask).unwrap();
            let kept = full.total(f) >= 4 || mask == 0 || mask == 15;
            match pruned.scope_of(cell, mask) {
                Some(p) => {
                    assert!(kept, "{}", full.describe(f));
                    assert_eq!((pruned.cells(p), pruned.describe(p)), (full.cells(f), full.describe(f)));
                    if full.total(f) >= 4 {
                        assert_eq!(pruned.is_canonical(p), full.is_canonical(f), "{}", full.describe(f));
                    }
                }
                None => assert!(!kept, "{}", full.describe(f)),
            }
        }
    }
    assert!(pruned.scopes_of(0).contains(&NO_SCOPE));
}

#[test]
fn hash_collisions_still_group_cells_by_their_values() {
    let m = nested();
    let layout = Layout::new(&m, 4).unwrap();
    let groups = |mask: u16, hash: &dyn Fn(u32) -> u64| {
        let mut out: Vec<Vec<u32>> = Vec::new();
        let mut buf = Vec::new();
        for_each_group_hashed(&layout.cell_values, 4, m.len(), mask, &mut buf, hash, |c| {
            out.push(c.to_vec())
        });
        out.sort();
        out
    };
    for mask in 0..16u16 {
        // Every cell hashes alike: the values alone must tell the scopes apart.
        let colliding = groups(mask, &|_| 0);
        let mut want = Vec::new();
        for_each_group(&layout.cell_values, 4, m.len(), mask, &mut Vec::new(), |c| want.push(c.to_vec()));
        want.sort();
        assert_eq!(colliding, want, "mask {mask}");
        assert!(want.iter().all(|g| g.windows(2).all(|w| w[0] < w[1])), "cells ascend in a scope");
    }
}

#[test]
fn nested_brokers_keep_the_zone_protocol_scope() {
    let index = ScopeIndex::new(&nested()).unwrap();
    // Two Kafka brokers per zone: {az=b, protocol=kafka} holds both and stands for itself.
    let zone_kafka = index.find(&[("az", "b"), ("protocol", "kafka")]).unwrap();
    assert_eq!(index.total(zone_kafka), 8);
    assert!(index.is_canonical(zone_kafka));
    // The RabbitMQ node is alone in its zone: {az=b, protocol=amqp} is {broker=r-b}.
    let zone_amqp = index.find(&[("az", "b"), ("protocol", "amqp")]).unwrap();
    assert!(!index.is_canonical(zone_amqp));
}

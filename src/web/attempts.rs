//! The queue of password checks. bcrypt is slow on purpose, so checks run one at a time (a
//! flood of wrong passwords costs at most one core), and clients take turns: each client
//! address has its own line, and the next check is taken from the line whose client was served
//! least recently. A client whose first login arrives while another address floods the server
//! waits for the check that runs now, never for the flood's line.
//!
//! Every line is short: a client may have [`PER_CLIENT`] checks waiting or running, and all
//! clients together [`TOTAL`]. A check beyond either is refused at once, without bcrypt, so a
//! flood is shed at its source and costs the other clients nothing. A client is its IPv4
//! address, or the /64 network of its IPv6 address (one host usually has a whole /64). Behind a
//! reverse proxy every client has the proxy's address and they share one line.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Checks one client may have waiting or running at once.
pub const PER_CLIENT: usize = 4;

/// Checks all clients together may have waiting or running at once.
pub const TOTAL: usize = 256;

/// A client as far as turns go: an IPv4 address or an IPv6 /64, as one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(u128);

impl Client {
    /// Requests whose address is not known share this one line.
    pub const UNKNOWN: Client = Client(u128::MAX);

    pub fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Client(u32::from(v4) as u128),
            IpAddr::V6(v6) => Client(u128::from(v6) & !((1u128 << 64) - 1)),
        }
    }
}

/// Why a check was refused without being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many login attempts in progress from this address; try again shortly")]
    Client,
    #[error("too many login attempts in progress; try again shortly")]
    Total,
}

/// The lines of waiting checks and whose turn it is.
#[derive(Default)]
pub struct Attempts {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The check that runs now.
    running: Option<u64>,
    next_id: u64,
    /// Each client's waiting checks, oldest first.
    waiting: HashMap<Client, VecDeque<Waiter>>,
    /// The clients with waiting checks, in the order they lined up.
    rotation: VecDeque<Client>,
    /// Checks per client, waiting or running.
    pending: HashMap<Client, usize>,
    total: usize,
    /// When each client with pending checks last had a turn, counted in turns.
    served: HashMap<Client, u64>,
    turns: u64,
}

struct Waiter {
    id: u64,
    wake: Arc<Notify>,
}

impl Attempts {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("login attempts lock")
    }

    /// Waits for `client`'s turn to run a check; the check runs while the [`Turn`] lives.
    pub async fn turn(&self, client: Client) -> Result<Turn<'_>, Refused> {
        let (id, wake) = {
            let mut state = self.lock();
            if state.pending.get(&client).copied().unwrap_or(0) >= PER_CLIENT {
                return Err(Refused::Client);
            }
            if state.total >= TOTAL {
                return Err(Refused::Total);
            }
            *state.pending.entry(client).or_default() += 1;
            state.total += 1;
            let id = state.next_id;
            state.next_id += 1;
            if state.running.is_none() {
                state.grant(client, id);
                return Ok(Turn { attempts: self, client });
            }
            let wake = Arc::new(Notify::new());
            let line = state.waiting.entry(client).or_default();
            line.push_back(Waiter { id, wake: wake.clone() });
            if line.len() == 1 {
                state.rotation.push_back(client);
            }
            (id, wake)
        };
        let waiting = Waiting { attempts: self, client, id };
        loop {
            wake.notified().await;
            if self.lock().running == Some(id) {
                std::mem::forget(waiting);
                return Ok(Turn { attempts: self, client });
            }
        }
    }
}

impl State {
    fn forget(&mut self, client: Client) {
        if let Some(n) = self.pending.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&client);
                self.served.remove(&client);
            }
        }
        self.total -= 1;
    }

    fn grant(&mut self, client: Client, id: u64) {
        self.turns += 1;
        self.served.insert(client, self.turns);
        self.running = Some(id);
    }

    /// Ends the running check and gives the turn to the waiting client served least recently
    /// (one never served first, in the order they lined up).
    fn pass_on(&mut self) {
        self.running = None;
        let next =
            self.rotation.iter().enumerate().min_by_key(|(_, c)| self.served.get(c).copied().unwrap_or(0));
        let Some(client) = next.map(|(i, _)| i).and_then(|i| self.rotation.remove(i)) else { return };
        let Some(line) = self.waiting.get_mut(&client) else { return };
        let Some(next) = line.pop_front() else { return };
        if line.is_empty() {
            self.waiting.remove(&client);
        } else {
            self.rotation.push_back(client);
        }
        self.grant(client, next.id);
        next.wake.notify_one();
    }
}

/// A check's turn: the next one starts when this is dropped.
pub struct Turn<'a> {
    attempts: &'a Attempts,
    client: Client,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.attempts.lock();
        state.forget(self.client);
        state.pass_on();
    }
}

/// A check waiting in its line; dropped with its request (a client that went away), it leaves
/// the line, or passes the turn on if the turn had just come.
struct Waiting<'a> {
    attempts: &'a Attempts,
    client: Client,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.attempts.lock();
        state.forget(self.client);
        if state.running == Some(self.id) {
            state.pass_on();
            return;
        }
        let client = self.client;
        if let Some(line) = state.waiting.get_mut(&client) {
            line.retain(|w| w.id != self.id);
            if line.is_empty() {
                state.waiting.remove(&client);
                state.rotation.retain(|c| *c != client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn client(n: u8) -> Client {
        Client::of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
    }

    /// Starts a check of `who` that records its turn in `order` and holds it until told.
    fn waiter(
        attempts: &Arc<Attempts>,
        who: u8,
        order: &Arc<Mutex<Vec<u8>>>,
    ) -> tokio::task::JoinHandle<Result<(), Refused>> {
        let (attempts, order) = (attempts.clone(), order.clone());
        tokio::spawn(async move {
            let _turn = attempts.turn(client(who)).await?;
            order.lock().unwrap().push(who);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_waits_for_one_check_of_a_flooding_client_not_for_its_whole_line() {
        let attempts = Arc::new(Attempts::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = attempts.turn(client(2)).await.unwrap();
        let flood: Vec<_> = (0..3).map(|_| waiter(&attempts, 2, &order)).collect();
        settle().await;
        let refused = attempts.turn(client(2)).await.err();
        assert_eq!(refused, Some(Refused::Client), "a fifth check of one client is refused at once");
        let newcomer = waiter(&attempts, 1, &order);
        settle().await;
        drop(first);
        newcomer.await.unwrap().unwrap();
        for f in flood {
            f.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [1, 2, 2, 2], "the newcomer goes right after the running check");
        assert_eq!(attempts.lock().total, 0, "every check is accounted for");
    }

    #[tokio::test(start_paused = true)]
    async fn clients_take_turns_in_rotation() {
        let attempts = Arc::new(Attempts::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = attempts.turn(client(9)).await.unwrap();
        let mut tasks = Vec::new();
        for who in [1, 1, 1, 2, 2, 3] {
            tasks.push(waiter(&attempts, who, &order));
            settle().await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [1, 2, 3, 1, 2, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_whose_request_went_away_leaves_no_trace() {
        let attempts = Arc::new(Attempts::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = attempts.turn(client(1)).await.unwrap();
        let gone = waiter(&attempts, 2, &order);
        let stays = waiter(&attempts, 3, &order);
        settle().await;
        gone.abort();
        settle().await;
        drop(first);
        stays.await.unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), [3]);
        // The turn came just as the request went away: it passes on.
        let holder = attempts.turn(client(1)).await.unwrap();
        let late = waiter(&attempts, 2, &order);
        let next = waiter(&attempts, 4, &order);
        settle().await;
        drop(holder);
        late.abort();
        next.await.unwrap().unwrap();
        let state = attempts.lock();
        assert_eq!((state.total, state.running, state.rotation.len()), (0, None, 0), "nothing leaked");
    }

    #[tokio::test]
    async fn the_whole_queue_is_bounded() {
        let attempts = Attempts::default();
        let mut turns = vec![attempts.turn(Client(0)).await.unwrap()];
        let mut waiting = Vec::new();
        for n in 1..TOTAL as u128 {
            let attempts = &attempts;
            let mut check = Box::pin(attempts.turn(Client(n)));
            assert!(futures_util::poll!(check.as_mut()).is_pending(), "check {n} waits");
            waiting.push(check);
        }
        assert_eq!(attempts.turn(Client(u128::MAX - 1)).await.err(), Some(Refused::Total));
        turns.clear();
        drop(waiting);
        assert!(attempts.turn(Client(0)).await.is_ok(), "room again once the line is gone");
    }

    #[test]
    fn an_ipv6_client_is_its_64_network_and_a_mapped_ipv4_is_the_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::10".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::10".parse().unwrap();
        assert_eq!(Client::of(a.into()), Client::of(b.into()));
        assert_ne!(Client::of(a.into()), Client::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(Client::of(mapped.into()), client(1));
    }
}

//! The cost of one call's permission plus recording, for our breaker and for the `failsafe` and
//! `recloser` crates doing the same work (closed breaker, successful calls), on one thread and
//! on two threads sharing one breaker.
//!
//! Two-thread figures are the wall time per call *per thread* while both threads hammer the
//! same breaker (wall time of the run ÷ calls made by each thread).
//!
//! Run: `cargo bench -p resilience --bench breaker -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use resilience::breaker::{BreakerConfig, CircuitBreaker, Outcome};

trait Breaker: Sync {
    fn call(&self);
}

struct Ours(CircuitBreaker);
impl Breaker for Ours {
    #[inline]
    fn call(&self) {
        if let Ok(p) = self.0.try_acquire() {
            p.record(black_box(Outcome::Success));
        }
    }
}

/// Ours, timing the call and letting the breaker classify slowness (what the pipeline does,
/// minus the clock reads, which the pipeline needs for its attempt records anyway).
struct OursTimed(CircuitBreaker);
impl Breaker for OursTimed {
    #[inline]
    fn call(&self) {
        if let Ok(p) = self.0.try_acquire() {
            p.record_elapsed(Outcome::Success, black_box(Duration::from_millis(3)));
        }
    }
}

struct Failsafe<P>(failsafe::StateMachine<P, ()>);
impl<P: failsafe::FailurePolicy + Send + Sync> Breaker for Failsafe<P> {
    #[inline]
    fn call(&self) {
        if self.0.is_call_permitted() {
            self.0.on_success();
        }
    }
}

struct Recloser(recloser::Recloser);
impl Breaker for Recloser {
    #[inline]
    fn call(&self) {
        let _ = black_box(self.0.call(|| Ok::<(), ()>(())));
    }
}

fn two_threads<B: Breaker>(b: &B, iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let worker = || {
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                b.call();
            }
            start.elapsed()
        };
        let other = s.spawn(worker);
        let mine = worker();
        mine.max(other.join().unwrap())
    })
}

fn bench(c: &mut Criterion) {
    let ours = Ours(CircuitBreaker::new(BreakerConfig::default()).unwrap());
    let ours_timed = OursTimed(CircuitBreaker::new(BreakerConfig::default()).unwrap());
    let failsafe = Failsafe(failsafe::Config::new().build());
    let recloser = Recloser(recloser::Recloser::default());

    let mut one = c.benchmark_group("one_thread");
    one.bench_function("ours", |bch| bch.iter(|| ours.call()));
    one.bench_function("ours_timed", |bch| bch.iter(|| ours_timed.call()));
    one.bench_function("failsafe", |bch| bch.iter(|| failsafe.call()));
    one.bench_function("recloser", |bch| bch.iter(|| recloser.call()));
    one.finish();

    let mut two = c.benchmark_group("two_threads");
    two.bench_function("ours", |bch| bch.iter_custom(|n| two_threads(&ours, n)));
    two.bench_function("ours_timed", |bch| {
        bch.iter_custom(|n| two_threads(&ours_timed, n))
    });
    two.bench_function("failsafe", |bch| {
        bch.iter_custom(|n| two_threads(&failsafe, n))
    });
    two.bench_function("recloser", |bch| {
        bch.iter_custom(|n| two_threads(&recloser, n))
    });
    two.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

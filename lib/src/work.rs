//! Running closures on other CPUs: one mailbox per CPU holding a type-erased job, shared by
//! both architectures' `smp::{on_cpu, on_cpus, on_cpu_async, on_cpu_mask, on_cpu_mask_async}`
//! and the [`CpuSet`] they take (kvm-unit-tests' `cpumask_t`). The arch supplies
//! `smp::{cpu_index, cpu_count, make_ready, idle, wake}`.

use core::fmt;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::arch::smp::{MAX_CPUS, cpu_count, cpu_index, idle, make_ready, wake};

/// Work posted to a CPU: the function (type-erased), and whether it has run.
struct Job {
    function: *const (),
    call: unsafe fn(*const ()),
    done: AtomicBool,
}

impl Job {
    fn new<F: Fn() + Sync>(function: &F) -> Job {
        Job {
            function: (function as *const F).cast(),
            call: call::<F>,
            done: AtomicBool::new(false),
        }
    }
}

/// Calls the `F` at `function`.
///
/// # Safety
/// `function` must point at a live `F`.
unsafe fn call<F: Fn()>(function: *const ()) {
    // SAFETY: the caller guarantees `function` is a live `F`.
    unsafe { (*function.cast::<F>())() }
}

/// A set of CPU indices (kvm-unit-tests' `cpumask_t`): which CPUs [`on_cpu_mask`] and
/// [`on_cpu_mask_async`] run a function on. One bit per CPU index below `MAX_CPUS`.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CpuSet(u64);

const _: () = assert!(MAX_CPUS <= 64, "CpuSet holds one bit per CPU in a u64");

impl CpuSet {
    /// No CPU.
    pub const EMPTY: CpuSet = CpuSet(0);

    /// Every CPU the runtime uses, `0..cpu_count()` (kvm-unit-tests' `cpu_present_mask`).
    pub fn all() -> CpuSet {
        CpuSet::range(0, cpu_count())
    }

    /// Every CPU but the one calling: the others of [`CpuSet::all`].
    pub fn others() -> CpuSet {
        CpuSet::all().without(cpu_index())
    }

    /// The CPUs `start..end` (cut to `MAX_CPUS`).
    pub fn range(start: usize, end: usize) -> CpuSet {
        (start..end.min(MAX_CPUS)).collect()
    }

    /// CPU `cpu` alone.
    ///
    /// # Panics
    /// When `cpu` is not below `MAX_CPUS`.
    pub fn only(cpu: usize) -> CpuSet {
        CpuSet::EMPTY.with(cpu)
    }

    /// This set and CPU `cpu`.
    ///
    /// # Panics
    /// When `cpu` is not below `MAX_CPUS`.
    pub fn with(self, cpu: usize) -> CpuSet {
        assert!(cpu < MAX_CPUS, "CPU {cpu} is beyond MAX_CPUS ({MAX_CPUS})");
        CpuSet(self.0 | 1 << cpu)
    }

    /// This set without CPU `cpu`.
    pub fn without(self, cpu: usize) -> CpuSet {
        if cpu < MAX_CPUS {
            CpuSet(self.0 & !(1 << cpu))
        } else {
            self
        }
    }

    /// Adds CPU `cpu`.
    ///
    /// # Panics
    /// When `cpu` is not below `MAX_CPUS`.
    pub fn insert(&mut self, cpu: usize) {
        *self = self.with(cpu);
    }

    /// Removes CPU `cpu`.
    pub fn remove(&mut self, cpu: usize) {
        *self = self.without(cpu);
    }

    /// Whether CPU `cpu` is in the set.
    pub fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & 1 << cpu != 0
    }

    /// How many CPUs the set holds.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set holds no CPU.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The CPUs in both sets.
    pub fn intersection(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 & other.0)
    }

    /// The CPUs in either set.
    pub fn union(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 | other.0)
    }

    /// The set as a bit mask, bit n for CPU n.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// The CPU indices in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_CPUS).filter(move |&cpu| self.contains(cpu))
    }
}

impl FromIterator<usize> for CpuSet {
    /// The set of the given CPUs.
    ///
    /// # Panics
    /// When a CPU is not below `MAX_CPUS`.
    fn from_iter<I: IntoIterator<Item = usize>>(cpus: I) -> CpuSet {
        cpus.into_iter().fold(CpuSet::EMPTY, CpuSet::with)
    }
}

impl fmt::Debug for CpuSet {
    /// The CPU indices, as a set: `{0, 2}`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_set().entries(self.iter()).finish()
    }
}

/// Each CPU's mailbox: the job it is to run next.
static MAILBOXES: [AtomicPtr<Job>; MAX_CPUS] = [const { AtomicPtr::new(null_mut()) }; MAX_CPUS];

fn post(cpu: usize, job: &Job) {
    make_ready(cpu);
    let job = (job as *const Job).cast_mut();
    while MAILBOXES[cpu]
        .compare_exchange(null_mut(), job, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        idle();
    }
    wake();
}

fn wait(job: &Job) {
    while !job.done.load(Ordering::Acquire) {
        idle();
    }
}

/// Runs `function` on CPU `cpu` and waits until it has returned.
///
/// # Panics
/// When `cpu` does not exist (or, on aarch64, cannot be started).
pub fn on_cpu<F: Fn() + Sync>(cpu: usize, function: F) {
    if cpu == cpu_index() {
        function();
        return;
    }
    let job = Job::new(&function);
    post(cpu, &job);
    wait(&job);
}

/// Runs `function` on every CPU at once (this one too) and waits for all of them.
pub fn on_cpus<F: Fn() + Sync>(function: F) {
    on_cpu_mask(CpuSet::all(), function);
}

/// Runs `function` on every CPU in `cpus` at once (on this one too if it is in the set) and
/// waits until all of them have returned (kvm-unit-tests' `on_cpumask`). No CPU outside the set
/// runs it.
///
/// # Panics
/// When a CPU in the set does not exist (or, on aarch64, cannot be started).
pub fn on_cpu_mask<F: Fn() + Sync>(cpus: CpuSet, function: F) {
    let me = cpu_index();
    let jobs: [Job; MAX_CPUS] = core::array::from_fn(|_| Job::new(&function));
    let others = || {
        jobs.iter()
            .enumerate()
            .filter(|(cpu, _)| *cpu != me && cpus.contains(*cpu))
    };
    for (cpu, job) in others() {
        post(cpu, job);
    }
    if cpus.contains(me) {
        function();
    }
    for (_, job) in others() {
        wait(job);
    }
}

/// Runs `function` on CPU `cpu` without waiting for it (the function and its job are
/// leaked: they must outlive a caller that does not wait). For functions that may not return,
/// such as aarch64's `cpu_off`.
///
/// # Panics
/// When `cpu` does not exist, or is this CPU.
pub fn on_cpu_async<F: Fn() + Sync + Send + 'static>(cpu: usize, function: F) {
    assert!(cpu != cpu_index(), "CPU {cpu} is this CPU");
    let function: &'static F = alloc::boxed::Box::leak(alloc::boxed::Box::new(function));
    let job: &'static Job = alloc::boxed::Box::leak(alloc::boxed::Box::new(Job::new(function)));
    post(cpu, job);
}

/// Runs `function` on every CPU in `cpus` without waiting for them (kvm-unit-tests'
/// `on_cpumask_async`): posts it to the other CPUs in the set, then, if this CPU is in the set,
/// runs it here too before returning. The function and the jobs are leaked, as for
/// [`on_cpu_async`]. No CPU outside the set runs it.
///
/// # Panics
/// When a CPU in the set does not exist (or, on aarch64, cannot be started).
pub fn on_cpu_mask_async<F: Fn() + Sync + Send + 'static>(cpus: CpuSet, function: F) {
    let me = cpu_index();
    let function: &'static F = alloc::boxed::Box::leak(alloc::boxed::Box::new(function));
    for cpu in cpus.iter().filter(|&cpu| cpu != me) {
        let job: &'static Job = alloc::boxed::Box::leak(alloc::boxed::Box::new(Job::new(function)));
        post(cpu, job);
    }
    if cpus.contains(me) {
        function();
    }
}

/// A secondary CPU's life once up: run what its mailbox receives, idling in between.
pub(crate) fn serve(me: usize) -> ! {
    loop {
        let job = MAILBOXES[me].load(Ordering::Acquire);
        if job.is_null() {
            idle();
            continue;
        }
        // SAFETY: a posted job stays alive until its `done` is set (`on_cpu` and `on_cpus`
        // wait for it; `on_cpu_async` leaks it), and its function is `Sync`.
        let job = unsafe { &*job };
        // SAFETY: as above: the function outlives the job, and `call` matches its type.
        unsafe { (job.call)(job.function) };
        MAILBOXES[me].store(null_mut(), Ordering::Release);
        job.done.store(true, Ordering::Release);
        wake();
    }
}

/// Empties CPU `cpu`'s mailbox without completing its job: for a job that never returns
/// (the CPU turns itself off, or is reset), so that the CPU can take work again once restarted.
pub(crate) fn abandon(cpu: usize) {
    MAILBOXES[cpu].store(null_mut(), Ordering::Release);
}

/// A reusable rendezvous of a fixed number of CPUs: each [`Barrier::wait`] returns only once
/// all of them have called it, so that work after it starts on every CPU together (a start
/// line for contention tests). Waiters spin, yielding with the architecture's idle/wake.
pub struct Barrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl Barrier {
    /// A barrier for `parties` CPUs (at least 1).
    pub const fn new(parties: usize) -> Barrier {
        Barrier {
            parties: if parties == 0 { 1 } else { parties },
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    /// How many CPUs the barrier waits for.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// Waits until all parties have arrived; the last to arrive releases the others. Returns
    /// true on exactly one CPU of each round (the last to arrive).
    pub fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            wake();
            return true;
        }
        while self.generation.load(Ordering::Acquire) == generation {
            core::hint::spin_loop();
        }
        false
    }
}

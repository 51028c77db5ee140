import Foundation
import Synchronization

/// A persistent pool of worker threads that spin briefly between jobs, then sleep.
/// Decoding issues hundreds of small parallel operations per token; waking fresh threads or going
/// through a dispatch queue for each costs more than the work itself on small models.
/// Jobs from several threads (sessions decoding at once on one model) take turns: one job owns the
/// workers at a time. A job started from inside a job runs on the calling thread alone.
public final class ThreadPool: @unchecked Sendable {
    // @unchecked: `job` is published to the workers through the `generation` atomic (release/acquire) and
    // only changed while `submit` is held; `activeThreads` is a setting changed between jobs.

    /// Marks threads that are running a job of some pool, so nested jobs do not wait for themselves.
    private static let insideJob: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
    private static var marker: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: 1)! }
    /// The process-wide pool, sized to the machine's cores (override with `LLAMA_ADAPTER_THREADS`).
    public static let shared: ThreadPool = {
        let env = ProcessInfo.processInfo.environment["LLAMA_ADAPTER_THREADS"].flatMap(Int.init)
        return ThreadPool(threads: env ?? ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Number of threads that take part in a job, the calling thread included.
    public private(set) var threadCount: Int

    /// Job counter times 256 plus the number of threads taking part, published as one word so a
    /// worker that wakes late never pairs one job's closure with another job's thread count.
    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    /// Next unclaimed chunk of the running `parallelForDynamic` job; reset under `submit` at every job.
    private let ticket = Atomic<Int>(0)
    private let condition = NSCondition()
    private var job: ((Int, Int) -> Void)?
    private var activeThreads: Int
    private var workers: [Thread] = []
    private let submit = NSLock()

    /// Creates a pool that runs jobs on `threads` threads (the caller plus `threads - 1` workers).
    public init(threads: Int) {
        // Our pool splits BLAS calls between its threads; OpenBLAS's own threads on top of it would fight
        // for the same cores (measured: 17% of a CLIP encode spent in sched_yield).
        BLAS.useSingleThread()
        threadCount = min(max(1, threads), 255)
        activeThreads = threadCount
        for index in 1..<threadCount {
            let t = Thread { [unowned self] in self.workerLoop(index: index) }
            // 8 MB, as the main thread's: unoptimised builds (`swift test`'s debug, the sanitizers) keep every
            // inlined instance of the integer GEMM's kernels in one frame (777 KB debug, 979 KB under
            // AddressSanitizer, which overflowed 1 MB); only the pages a thread touches are committed.
            t.stackSize = 8 << 20
            t.start()
            workers.append(t)
        }
    }

    /// Limits jobs to the first `n` threads (1...threadCount); used by the bench's `--threads`.
    public func setActiveThreads(_ n: Int) {
        activeThreads = min(max(1, n), threadCount)
    }

    /// Number of threads jobs currently use.
    public var activeThreadCount: Int { activeThreads }

    /// Runs `body(threadIndex, threadCount)` once on each active thread and returns when all are done.
    public func run(_ body: (Int, Int) -> Void) {
        run(threads: activeThreads, body)
    }

    private func run(threads n: Int, _ body: (Int, Int) -> Void) {
        if n == 1 || pthread_getspecific(Self.insideJob) != nil { body(0, 1); return }
        submit.lock()
        pthread_setspecific(Self.insideJob, Self.marker)
        ticket.store(0, ordering: .relaxed)  // published to the workers with the generation below
        defer {
            pthread_setspecific(Self.insideJob, nil)
            submit.unlock()
        }
        withoutActuallyEscaping(body) { escaping in
            job = escaping
            pending.store(n - 1, ordering: .releasing)
            let next = ((generation.load(ordering: .relaxed) >> 8) + 1) << 8 | n
            generation.store(next, ordering: .sequentiallyConsistent)
            // Sequentially consistent with the worker's increment-then-check, so a wake-up is never lost.
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock(); condition.broadcast(); condition.unlock()
            }
            escaping(0, n)
            while pending.load(ordering: .acquiring) > 0 {}
            job = nil
        }
    }

    /// When set, `parallelFor` cuts its range into this many chunks (fewer for small ranges) whatever the number
    /// of threads, and the threads take the chunks in turn. Every BLAS call then sees the same sub-problem on one
    /// thread or many, so results do not depend on the thread count (`--deterministic-reduce`), at the price of
    /// more, smaller calls. Set between jobs.
    public var fixedChunks: Int?

    /// Splits `0..<count` into one contiguous chunk per active thread (or into `fixedChunks` chunks) and runs
    /// `body` on each chunk.
    public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if let f = fixedChunks, f > 0 {
            let c = min(f, max(1, count / max(1, minChunk)))
            let n = min(activeThreads, c)
            func chunk(_ j: Int) -> Range<Int> { (count * j / c)..<(count * (j + 1) / c) }
            if n <= 1 || c <= 1 { for j in 0..<c where !chunk(j).isEmpty { body(chunk(j)) }; return }
            run(threads: n) { i, t in
                for j in stride(from: i, to: c, by: t) where !chunk(j).isEmpty { body(chunk(j)) }
            }
            return
        }
        let n = min(activeThreads, max(1, count / max(1, minChunk)))
        if n <= 1 || count <= 1 { body(0..<count); return }
        run(threads: n) { i, t in
            let lo = count * i / t, hi = count * (i + 1) / t
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Splits `0..<count` into chunks of `chunk` items that the active threads claim one after another until
    /// none is left. Where a static split leaves one thread idle when the other is slowed (a busy neighbour on a
    /// shared machine, a preempted vCPU), claiming keeps both streaming to the end; use it for work whose result
    /// does not depend on how it is split (every mat-vec row is computed alone). `body` also gets the index of
    /// the thread running it (below `activeThreadCount`), for per-thread scratch.
    public func parallelForDynamic(_ count: Int, chunk: Int, _ body: (Range<Int>, Int) -> Void) {
        guard count > 0 else { return }
        let chunk = max(1, chunk)
        let chunks = (count - 1) / chunk + 1
        let n = min(activeThreads, chunks)
        // Nested inside another job, the ticket belongs to that job: run the chunks here, in order.
        if n <= 1 || pthread_getspecific(Self.insideJob) != nil {
            var lo = 0
            while lo < count { body(lo..<min(count, lo + chunk), 0); lo += chunk }
            return
        }
        run(threads: n) { i, _ in
            while true {
                let c = ticket.wrappingAdd(1, ordering: .relaxed).oldValue
                if c >= chunks { break }
                body((c * chunk)..<min(count, (c + 1) * chunk), i)
            }
        }
    }

    private func workerLoop(index: Int) {
        pthread_setspecific(Self.insideJob, Self.marker)
        var seen = 0
        while true {
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            while current == seen {
                spins += 1
                if spins > 200_000 {
                    condition.lock()
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    current = generation.load(ordering: .sequentiallyConsistent)
                    while current == seen {
                        condition.wait()
                        current = generation.load(ordering: .acquiring)
                    }
                    sleepers.subtract(1, ordering: .relaxed)
                    condition.unlock()
                    break
                }
                current = generation.load(ordering: .acquiring)
            }
            seen = current
            let n = current & 255
            if index < n {
                job!(index, n)
                pending.subtract(1, ordering: .releasing)
            }
        }
    }
}

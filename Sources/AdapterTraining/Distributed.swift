// Data-parallel training over MPI (`mpirun -np N llama-adapter finetune ...`): every rank holds the frozen model
// and the adapter, takes a disjoint slice of each global micro-batch, and the ranks sum their trainable
// gradients with one bucketed allreduce per optimizer step, so every rank applies the same AdamW update.
import Foundation
import AdapterCore
import CMPI

/// Element type of a reduction.
public enum ReduceElement: Sendable {
    /// 32-bit floats (gradients).
    case float
    /// 64-bit floats (losses, flags).
    case double
    /// 64-bit integers (the fixed-point gradients of `--deterministic-reduce`).
    case int64

    var code: Int32 { self == .float ? Int32(LA_MPI_FLOAT) : self == .double ? Int32(LA_MPI_DOUBLE) : Int32(LA_MPI_INT64) }
}

/// Reduction operation.
public enum ReduceOp: Sendable {
    /// Element-wise sum.
    case sum
    /// Element-wise maximum (exact in any order).
    case max
}

/// The ranks of a training job, as the trainer needs them: who am I, how many are we, and an in-place allreduce.
public protocol Communicator: AnyObject {
    /// This process's rank (0 logs and writes files).
    var rank: Int { get }
    /// Number of ranks.
    var size: Int { get }
    /// Replaces `count` elements at `buffer` with their reduction over all ranks (the same result on every rank).
    func allreduce(_ buffer: UnsafeMutableRawPointer, count: Int, element: ReduceElement, op: ReduceOp) throws
}

extension Communicator {
    /// Allreduce of a Swift array in place.
    public func allreduce<T>(_ values: inout [T], element: ReduceElement, op: ReduceOp) throws {
        let n = values.count
        try values.withUnsafeMutableBytes { try allreduce($0.baseAddress!, count: n, element: element, op: op) }
    }
}

/// One process: reductions are the identity.
public final class LocalCommunicator: Communicator {
    /// Always 0.
    public let rank = 0
    /// Always 1.
    public let size = 1
    /// A single process.
    public init() {}
    /// Nothing to combine.
    public func allreduce(_ buffer: UnsafeMutableRawPointer, count: Int, element: ReduceElement, op: ReduceOp) throws {}
}

/// MPI_COMM_WORLD of a job started by `mpirun` (or another MPI launcher).
public final class MPICommunicator: Communicator {
    /// This rank.
    public let rank: Int
    /// Ranks in the job.
    public let size: Int
    /// Ranks on this host (they share its cores).
    public let localSize: Int
    /// Elements per allreduce bucket (all buckets are in flight together).
    public var bucketElements = 4 << 20
    /// Seconds a collective may wait for the other ranks before the job is stopped (0: no limit).
    public var timeout: Double = 1800
    private var finished = false

    /// Whether this binary was built with an MPI library (mpi.h found through pkg-config `ompi-c`).
    public static var isAvailable: Bool { la_mpi_available() != 0 }

    /// Whether the process was started by an MPI launcher (Open MPI, MPICH/Hydra, PMIx or Slurm's PMI).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"].contains { env[$0] != nil }
    }

    /// The job's communicator when launched by `mpirun`, else nil (one process, MPI never initialised).
    /// Throws when launched by `mpirun` but this build has no MPI.
    public static func startIfLaunched() throws -> MPICommunicator? {
        guard launchedByMPI else { return nil }
        guard isAvailable else {
            throw AdapterError.invalidArgument("started by mpirun, but this build has no MPI support: install libopenmpi-dev (pkg-config ompi-c) and rebuild")
        }
        return try MPICommunicator()
    }

    private init() throws {
        let e = la_mpi_init()
        guard e == 0 else { throw AdapterError.io("MPI_Init failed: \(MPICommunicator.message(e))") }
        rank = Int(la_mpi_rank())
        size = Int(la_mpi_size())
        localSize = Int(max(1, la_mpi_local_size()))
    }

    deinit { finish() }

    /// MPI_Finalize (once); call when the rank's work is done.
    public func finish() {
        guard !finished else { return }
        finished = true
        la_mpi_finalize()
    }

    /// Stops the whole job (every rank) with `code`.
    public func abort(_ code: Int32) { la_mpi_abort(code) }

    static func message(_ code: Int32) -> String {
        if code == Int32(LA_MPI_TIMEOUT) { return "timed out" }
        if code == Int32(LA_MPI_TOO_MANY) { return "too many buckets" }
        var buf = [CChar](repeating: 0, count: 512)
        la_mpi_error_string(code, &buf, Int32(buf.count))
        return String(cString: buf)
    }

    /// Bucketed non-blocking allreduce, waited for with a timeout.
    public func allreduce(_ buffer: UnsafeMutableRawPointer, count: Int, element: ReduceElement, op: ReduceOp) throws {
        guard size > 1, count > 0 else { return }
        let e = la_mpi_allreduce(buffer, Int64(count), element.code, op == .max ? Int32(LA_MPI_MAX) : Int32(LA_MPI_SUM),
                                 Int64(bucketElements), timeout)
        if e == Int32(LA_MPI_TIMEOUT) {
            // Another rank is stuck or gone without the launcher noticing: stop everyone rather than hang.
            FileHandle.standardError.write(Data("error: rank \(rank): the other ranks did not reach the gradient allreduce within \(Int(timeout)) s (--mpi-timeout); stopping the job\n".utf8))
            abort(1)
        }
        guard e == 0 else { throw AdapterError.io("rank \(rank): allreduce failed: \(MPICommunicator.message(e))") }
    }
}

/// Order-independent sums of float gradients: each term is rounded to a 64-bit fixed-point number whose scale
/// follows from the tensor's largest |value| over all terms of all ranks (an exact maximum), and integers add
/// exactly in any order, so the result is the same bit for bit for any number of ranks and any split of the
/// batch (`--deterministic-reduce`). Each term keeps about 62 − log2(terms) bits below the tensor's largest
/// value, more than a float's 24.
struct FixedPointSum {
    /// Per tensor: the power of two that maps values to integers (0: the tensor is all zero).
    let scales: [Double]
    let offsets: [Int]
    let total: Int

    /// Scales for tensors with the given element counts and largest magnitudes, for sums of `terms` values.
    init(counts: [Int], maxima: [Float], terms: Int) {
        var off: [Int] = [], o = 0
        for c in counts { off.append(o); o += c }
        offsets = off
        total = o
        let headroom = Int.bitWidth - max(terms, 1).leadingZeroBitCount + 1
        scales = maxima.map { m in
            guard m > 0, m.isFinite else { return 0 }
            // |v| ≤ m < 2^(exponent+1), so |v|·2^s < 2^(62 − headroom) and `terms` of them fit in an Int64.
            let s = 62 - headroom - (Int(m.exponent) + 1)
            return Double(sign: .plus, exponent: s, significand: 1)
        }
    }

    /// Adds the tensors' values (one flat buffer, tensors at `offsets`) to `acc`.
    func add(_ values: UnsafePointer<Float>, into acc: UnsafeMutablePointer<Int64>) {
        for (t, s) in scales.enumerated() where s != 0 {
            let n = (t + 1 < offsets.count ? offsets[t + 1] : total) - offsets[t]
            let v = values + offsets[t], a = acc + offsets[t]
            for i in 0..<n { a[i] &+= Int64((Double(v[i]) * s).rounded(.toNearestOrEven)) }
        }
    }

    /// The float values of the sums in `acc`.
    func values(_ acc: UnsafePointer<Int64>, into out: UnsafeMutablePointer<Float>) {
        for (t, s) in scales.enumerated() {
            let n = (t + 1 < offsets.count ? offsets[t + 1] : total) - offsets[t]
            let a = acc + offsets[t], o = out + offsets[t]
            if s == 0 { o.update(repeating: 0, count: n); continue }
            for i in 0..<n { o[i] = Float(Double(a[i]) / s) }
        }
    }
}

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Process and machine measurements used by the bench.
public enum Measure {
    /// Monotonic time in seconds.
    public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Peak resident set size of this process in bytes (VmHWM on Linux, ru_maxrss on macOS).
    public static func peakResidentBytes() -> Int {
        #if os(Linux)
        return statusBytes("VmHWM:")
        #else
        var usage = rusage()
        getrusage(RUSAGE_SELF, &usage)
        return Int(usage.ru_maxrss)
        #endif
    }

    /// Resets the peak resident size to the current one (Linux: `5` written to /proc/self/clear_refs), so a
    /// measurement's own buffers, once freed, stop counting in the peak. False where the system has no such reset.
    @discardableResult
    public static func resetPeakResidentBytes() -> Bool {
        #if os(Linux)
        guard let f = fopen("/proc/self/clear_refs", "w") else { return false }
        let ok = fputs("5", f) >= 0
        return fclose(f) == 0 && ok
        #else
        return false
        #endif
    }

    /// Current resident set size in bytes (VmRSS on Linux; the peak on macOS, which has no cheap current figure).
    public static func residentBytes() -> Int {
        #if os(Linux)
        return statusBytes("VmRSS:")
        #else
        return peakResidentBytes()
        #endif
    }

    #if os(Linux)
    /// A size line of /proc/self/status ("VmRSS:   1234 kB") in bytes.
    private static func statusBytes(_ key: String) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(key) {
            return (line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }.first ?? 0) * 1024
        }
        return 0
    }
    #endif

    /// Read bandwidth in bytes/s: the best of `repeats` passes over a `bytes`-sized buffer, split over the pool.
    public static func readBandwidth(bytes: Int = 1 << 30, repeats: Int = 5, pool: ThreadPool = .shared) -> Double {
        let n = bytes / 4
        // On huge pages, as the int8 mode's repacked weights: with 4 KB pages this measured ~35 GB/s where the
        // 7B Q4_0 int8 decode streamed 43, so the "bound" was no bound.
        let storage = Storage(uninitializedBytes: n * 4, hugePages: true)
        let buf = storage.base.bindMemory(to: Float.self, capacity: n)
        defer { withExtendedLifetime(storage) {} }
        // Touch every page so the timing sees memory, not page faults.
        buf.initialize(repeating: 1, count: n)
        var best = 0.0
        var sink: Float = 0
        let sinks = UnsafeMutablePointer<Float>.allocate(capacity: 256)
        defer { sinks.deallocate() }
        for _ in 0..<repeats {
            let t0 = now()
            pool.run { i, t in
                let lo = n * i / t, hi = n * (i + 1) / t
                sinks[i] = readSum(buf + lo, hi - lo)
            }
            let dt = now() - t0
            sink += sinks[0]
            best = max(best, Double(bytes) / dt)
        }
        if sink == -1 { print(sink) }
        return best
    }

    private static func readSum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        // A dot of the buffer with itself streams it once (the second operand hits the same cache lines).
        dot(p, p, n)
    }
}

/// Errors a user can act on. `description` is the one line printed after `error:`.
public enum AdapterError: Error, CustomStringConvertible, Equatable {
    case io(String)
    case format(String)
    case shape(String)
    case unsupported(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .io(let m), .format(let m), .shape(let m), .unsupported(let m), .invalidArgument(let m): return m
        }
    }
}

import ArgumentParser
struct Generate: ParsableCommand {}
struct Score: ParsableCommand {}
struct Tokenize: ParsableCommand {}
struct Inspect: ParsableCommand {}

import Foundation
import AdapterFormats

/// Writes the loss curve (left axis) and learning rate (right axis, dashed) of `history` as a standalone SVG.
public func writeLossPlot(_ history: [StepReport], to path: String) throws {
    let w = 720.0, h = 360.0, left = 64.0, right = 64.0, top = 24.0, bottom = 44.0
    let pw = w - left - right, ph = h - top - bottom
    let pts = history.filter { $0.loss.isFinite }
    let steps = pts.map { Double($0.step) }
    let maxStep = max(steps.max() ?? 1, 1)
    let losses = pts.map(\.loss)
    var lo = losses.min() ?? 0, hi = losses.max() ?? 1
    if hi - lo < 1e-9 { hi = lo + 1 }
    let pad = (hi - lo) * 0.05
    lo -= pad; hi += pad
    let maxLR = max(pts.map(\.lr).max() ?? 1, 1e-30)
    func x(_ s: Double) -> Double { left + pw * s / maxStep }
    func y(_ l: Double) -> Double { top + ph * (1 - (l - lo) / (hi - lo)) }
    func yr(_ r: Double) -> Double { top + ph * (1 - r / maxLR) }
    func f(_ v: Double) -> String { String(format: "%.1f", v) }
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    svg += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#888\"/>\n"
    for i in 0...4 {
        let l = lo + (hi - lo) * Double(i) / 4, yy = y(l)
        svg += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(yy))\" y2=\"\(f(yy))\" stroke=\"#eee\"/>"
        svg += "<text x=\"\(f(left - 6))\" y=\"\(f(yy + 4))\" text-anchor=\"end\">\(String(format: "%.3g", l))</text>\n"
        let r = maxLR * Double(i) / 4
        svg += "<text x=\"\(f(left + pw + 6))\" y=\"\(f(yr(r) + 4))\" fill=\"#c60\">\(String(format: "%.2g", r))</text>\n"
        let s = maxStep * Double(i) / 4
        svg += "<text x=\"\(f(x(s)))\" y=\"\(f(top + ph + 16))\" text-anchor=\"middle\">\(Int(s.rounded()))</text>\n"
    }
    if !pts.isEmpty {
        svg += "<polyline fill=\"none\" stroke=\"#c60\" stroke-dasharray=\"5,4\" stroke-width=\"1.5\" points=\""
            + pts.map { "\(f(x(Double($0.step)))),\(f(yr($0.lr)))" }.joined(separator: " ") + "\"/>\n"
        svg += "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\""
            + pts.map { "\(f(x(Double($0.step)))),\(f(y($0.loss)))" }.joined(separator: " ") + "\"/>\n"
    }
    svg += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(h - 8))\" text-anchor=\"middle\">optimizer step</text>\n"
    svg += "<text x=\"14\" y=\"\(f(top + ph / 2))\" transform=\"rotate(-90 14 \(f(top + ph / 2)))\" text-anchor=\"middle\" fill=\"#1f5fbf\">training loss</text>\n"
    svg += "<text x=\"\(f(w - 10))\" y=\"\(f(top + ph / 2))\" transform=\"rotate(90 \(f(w - 10)) \(f(top + ph / 2)))\" text-anchor=\"middle\" fill=\"#c60\">learning rate</text>\n"
    svg += "</svg>\n"
    try AtomicFile.write(Array(svg.utf8), to: path)
}

import Foundation

/// A fresh directory under the system's temporary directory, removed by `remove()`.
struct TempDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "postie-app-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        return file
    }

    func files(in relative: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: path + "/" + relative)) ?? []
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

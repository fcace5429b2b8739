import LMTPCore
import NIOCore
import POP3Core

/// The LMTP input decoder, command parser and session state machine driven by a random client,
/// with a store that knows `alice` and `bob` and accepts every message.
///
/// Two bytes pick chunk sizes and limits (message size, recipients). Invariants: the session
/// (every reply and every delivered message) is the same whether the bytes come whole or in
/// chunks; a delivered message is canonical and its reported size is its octet count; no
/// reply line holds a CR or LF; the decoder never holds more than a command line.
enum LMTPTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        let seed = reader.byte()
        let limits = reader.byte()
        let configuration = LMTPSessionStateMachine.Configuration(
            hostname: "lmtp.postie.test", maxMessageSize: Int(limits & 0x0F) * 64, maxRecipients: 1 + Int(limits >> 4) % 4,
            recipientMapping: RecipientMapping.allCases[Int(limits >> 6) % RecipientMapping.allCases.count])
        let stream = reader.rest()

        var whole = Session(configuration)
        whole.feed([stream[...]])
        var sizes = ChunkSizes(seed: seed, maximum: 64)
        var chunked = Session(configuration)
        chunked.feed(chunks(stream, &sizes))
        require(whole.transcript == chunked.transcript, "session depends on chunking:\n\(whole.transcript.suffix(3))\n\(chunked.transcript.suffix(3))")
    }

    struct Session {
        var machine: LMTPSessionStateMachine
        var decoder = LMTPInputDecoder()
        var closed = false
        var message: [UInt8] = []
        /// Replies and deliveries in order.
        var transcript: [String] = []

        init(_ configuration: LMTPSessionStateMachine.Configuration) {
            machine = LMTPSessionStateMachine(configuration: configuration)
            render(machine.greeting)
        }

        mutating func feed(_ pieces: [ArraySlice<UInt8>]) {
            for piece in pieces where !closed {
                decoder.append(ByteBuffer(bytes: piece))
                while !closed, let input = decoder.next() {
                    handle(input)
                }
                require(closed || decoder.bufferedBytes <= LMTPLimits.maxCommandLineLength, "decoder holds \(decoder.bufferedBytes) octets")
            }
        }

        mutating func handle(_ input: LMTPInput) {
            switch input {
            case .line(let line):
                if case .data = machine.state { require(false, "a command line while reading data") }
                let command: LMTPCommand
                do {
                    command = try LMTPCommand(parsing: line)
                } catch {
                    perform(machine.invalidLine(error))
                    return
                }
                perform(machine.receive(command))
            case .lineTooLong:
                perform(machine.lineTooLong())
            case .data(let bytes):
                require(decoder.isReadingData, "data outside DATA")
                message += bytes.readableBytesView
            case .endOfData(let size, let headerSize):
                require(size == message.count, "end of data says \(size) octets, got \(message.count)")
                require(headerSize <= size, "header \(headerSize) larger than message \(size)")
                MessageTransformsTarget.requireCanonical(message)
                perform(machine.dataReceived(size: size))
            }
        }

        mutating func perform(_ first: LMTPSessionStateMachine.Action) {
            var next: LMTPSessionStateMachine.Action? = first
            while let action = next, !closed {
                next = nil
                switch action {
                case .none:
                    break
                case .send(let reply):
                    render(reply)
                case .sendEach(let replies), .discardAndSendEach(let replies):
                    replies.forEach { render($0) }
                case .lookUpRecipient(let candidates):
                    if candidates.contains(where: { $0.hasPrefix("fail") }) {
                        next = machine.recipientLookupFailed()
                    } else {
                        next = machine.recipientLookedUp(user: candidates.first { $0 == "alice" || $0 == "bob" })
                    }
                case .openSpool:
                    next = machine.spoolOpened()
                case .startData(let reply):
                    render(reply)
                    decoder.beginData()
                    message = []
                case .deliver(let users):
                    transcript.append("deliver \(users) \(message)")
                    next = machine.delivered(users.map { _ in .delivered })
                case .sendAndClose(let reply):
                    render(reply)
                    closed = true
                }
            }
        }

        mutating func render(_ reply: LMTPReply) {
            var out = ByteBuffer()
            out.writeLMTPReply(reply)
            let text = String(decoding: out.readableBytesView, as: UTF8.self)
            let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false).dropLast()
            require(lines.count == max(1, reply.lines.count), "reply rendered as \(lines.count) lines: \(text.debugDescription)")
            for line in lines { require(!line.contains("\r") && !line.contains("\n"), "line end inside a reply line") }
            transcript.append(text)
        }
    }
}

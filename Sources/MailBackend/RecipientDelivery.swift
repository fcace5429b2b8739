import DurableFiles

#if canImport(Glibc)
import Glibc
#endif

/// The loop every file store's ``MailDelivery/deliver(_:to:)`` runs: each recipient looked up
/// and stored in turn, one result each, errors in the seam's terms.
public enum RecipientDelivery {
    /// Calls `store` for each recipient the user database knows (an unknown one is
    /// ``BackendError/noSuchUser(_:)``); a thrown ``BackendError`` is that recipient's result,
    /// a ``DurableFiles/SystemError`` becomes ``fileFailure(_:user:)``, anything else temporary.
    public static func deliver(
        to recipients: [String], users: any UserLookup, _ store: (AuthenticatedUser) async throws -> Void
    ) async -> [BackendError?] {
        var results: [BackendError?] = []
        for name in recipients {
            do {
                guard let user = try await users.lookUpUser(name) else {
                    results.append(.noSuchUser(name))
                    continue
                }
                try await store(user)
                results.append(nil)
            } catch let error as BackendError {
                results.append(error)
            } catch let error as SystemError {
                results.append(fileFailure(error, user: name))
            } catch {
                results.append(.temporary("deliver to \(name): \(error)"))
            }
        }
        return results
    }

    /// A failed system call as the sender should see it: missing permissions or a file in the
    /// way need an administrator (permanent); anything else, a full disk included, is worth
    /// retrying.
    public static func fileFailure(_ error: SystemError, user: String) -> BackendError {
        switch error.errno {
        case EACCES, EPERM, EROFS, ENOTDIR, EISDIR, ELOOP, ENAMETOOLONG:
            return BackendError(.permanent, message: "Cannot create the mailbox", logDetail: "deliver to \(user): \(error)")
        case ENOSPC, EDQUOT:
            return BackendError(.temporary, message: "Insufficient system storage, try again later", logDetail: "deliver to \(user): \(error)")
        default:
            return BackendError(.temporary, message: "Temporary failure storing the message, try again later", logDetail: "deliver to \(user): \(error)")
        }
    }
}

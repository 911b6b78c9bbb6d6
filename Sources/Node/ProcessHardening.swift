import CProcessControl
import Foundation
import Logging
import Sealing

/// What a member does to its own process before it reads any key: a crash must not write the
/// master key, data keys or plaintext values to a core file, other processes of the same user
/// must not attach to it, and key material lives in memory that is locked and out of dumps.
public enum ProcessHardening {
    public struct Report: Sendable, Equatable, CustomStringConvertible {
        public var coreLimit: Int64
        public var dumpable: Int32
        public var secureHeap: SecureMemory.Status

        public var description: String {
            "core dumps \(coreLimit == 0 ? "off" : "ON (limit \(coreLimit))"), \(dumpable == 0 ? "not dumpable" : "DUMPABLE"), "
                + "key memory \(secureHeap == .locked ? "locked and out of dumps" : secureHeap == .unlocked ? "out of dumps but not locked (raise LimitMEMLOCK)" : "in the ordinary heap")"
        }

        public var isHardened: Bool { coreLimit == 0 && dumpable == 0 && secureHeap != .unavailable }
    }

    /// Applies every measure and reads back what took effect.
    @discardableResult
    public static func apply(logger: Logger) -> Report {
        if crm_disable_core_dumps() != 0 {
            logger.warning("could not set RLIMIT_CORE to 0", metadata: ["errno": "\(errno)"])
        }
        if crm_set_not_dumpable() != 0 {
            logger.warning("could not clear the dumpable flag", metadata: ["errno": "\(errno)"])
        }
        let secureHeap = SecureMemory.start()
        let report = Report(coreLimit: crm_core_limit(), dumpable: crm_dumpable(), secureHeap: secureHeap)
        if report.isHardened {
            logger.info("process hardened", metadata: ["state": "\(report)"])
        } else {
            logger.warning("process not fully hardened", metadata: ["state": "\(report)"])
        }
        return report
    }

    /// Test harnesses set CRM_EXIT_WITH_PARENT to their pid: the member then dies with them, so
    /// a crashed test run never leaves members behind.
    public static func exitWithParentIfAsked() {
        guard let text = ProcessInfo.processInfo.environment["CRM_EXIT_WITH_PARENT"], let parent = Int32(text) else {
            return
        }
        _ = crm_exit_with_parent(parent)
    }
}

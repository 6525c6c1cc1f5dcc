// RelayServer: listens on RelayConfig::listen and relays every TCP client (or UDP source
// address) to a pipe of its own to RelayConfig::target, both ways, with counters.
//
// Threading: bound to its Loop's thread, like the pipes it owns; its callbacks run there.
// Lifetime: shared-owned (start() returns a shared_ptr); dropping the last reference closes
// every pipe without running the relay's callbacks.
#pragma once

#include "relay_config.hpp"

#include <pipeworks/loop.hpp>
#include <pipeworks/pipe.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

namespace pipeworks::relay {

// One relayed connection (or UDP source), as reported when it closes.
struct ConnReport {
    std::uint64_t id = 0;  // 1, 2, ... in accept order
    Address client;        // the TCP client or UDP source
    Address target;
    std::uint64_t up_bytes = 0;    // received from the client (toward the target)
    std::uint64_t down_bytes = 0;  // received from the target (toward the client)
    std::chrono::milliseconds duration{0};
    // Why it closed: an EndReason name ("peer_close", "peer_reset", "error", "timeout",
    // "framing_error", "local_close") or the relay's own "idle_timeout" / "shutdown".
    std::string reason;
    std::string side;    // who ended first: "client", "target" or "relay"
    std::string detail;  // the error message, if any
};

// Totals since start, open connections included.
struct RelayCounters {
    std::uint64_t accepted = 0;  // connections (sources) relayed
    std::uint64_t refused = 0;   // clients reset / new sources dropped by max_conns
    std::uint64_t failed = 0;    // connections whose target never came up
    std::uint64_t open = 0;
    std::uint64_t up_bytes = 0;
    std::uint64_t down_bytes = 0;
    std::uint64_t dropped = 0;     // datagrams dropped (source limit, full target, stray replies)
    std::uint64_t tls_failed = 0;  // tls:// LISTEN: clients whose handshake failed (not relayed)
};

class RelayServer : public std::enable_shared_from_this<RelayServer> {
public:
    using CloseFn = std::function<void(const ConnReport&)>;
    using LogFn = std::function<void(const std::string&)>;

    // Validates `config`, points the loop's Resolver at config.dns_servers (when given; the
    // whole loop's lookups then use them), opens the listening pipe and starts relaying.
    // Errors: the config's, the Resolver's, or the bind's.
    static Result<std::shared_ptr<RelayServer>> start(Loop& loop, RelayConfig config);
    ~RelayServer();

    RelayServer(const RelayServer&) = delete;
    RelayServer& operator=(const RelayServer&) = delete;

    // The address actually listened on (the OS's port when 0 was asked).
    Address local_address() const;
    const RelayConfig& config() const noexcept { return config_; }

    // Called once per relayed connection (or UDP source) when it has closed on both sides.
    void on_close(CloseFn fn) { on_close_ = std::move(fn); }
    // Called with one line per event worth telling the operator (a refused client, a target
    // that cannot be reached, a client's failed TLS handshake).
    void on_log(LogFn fn) { on_log_ = std::move(fn); }

    RelayCounters counters() const;
    std::size_t open_connections() const noexcept { return conns_.size(); }
    // Bytes accepted for sending and not yet taken by the OS, over every pipe of the relay.
    std::size_t queued_bytes() const;

    // Stops taking new clients (TCP: the listening socket is closed; UDP: datagrams from new
    // sources are dropped) and, once nothing is open, runs `done`. Connections still open
    // after `grace` are closed (reason "shutdown"), their queued bytes sent first.
    void shutdown(std::chrono::milliseconds grace, std::function<void()> done);
    // Closes every open connection now (reason "shutdown").
    void close_all();

private:
    struct Conn;

    RelayServer(Loop& loop, RelayConfig config);
    Error open_listener();
    void accept_tcp(const PipePtr& accepted);
    Result<PipePtr> own_pipe(const PipePtr& accepted);
    void on_datagram(const Message& m);
    Result<PipePtr> open_target(Conn& c);
    void watch(Conn& c);
    void pipe_ended(std::uint64_t id, bool client_side, const EndInfo& e);
    void finish(std::uint64_t id);
    void close_conn(Conn& c, const char* reason);
    void sweep_idle();
    void maybe_done();
    void log(const std::string& line) const;
    std::size_t max_conns() const noexcept;

    Loop& loop_;
    RelayConfig config_;
    NetConf client_conf_, target_conf_;
    PipePtr listener_;
    bool accepting_ = true;
    std::map<std::uint64_t, std::unique_ptr<Conn>> conns_;
    std::unordered_map<Address, std::uint64_t> sources_;  // UDP listen: source -> conn id
    std::uint64_t next_id_ = 1;
    RelayCounters closed_;  // totals of the connections already closed (and the event counts)
    std::optional<std::chrono::milliseconds> idle_timeout_;  // swept by the relay (a UDP side)
    Timer idle_timer_, grace_timer_;
    std::function<void()> done_;
    CloseFn on_close_;
    LogFn on_log_;
};

}  // namespace pipeworks::relay

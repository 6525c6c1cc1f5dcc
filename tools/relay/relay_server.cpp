#include "relay_server.hpp"

#include <pipeworks/resolver.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace pipeworks::relay {

namespace {

// SO_LINGER 0: closing the socket then sends a reset instead of a FIN.
void set_reset_on_close(const PipePtr& p, bool on) {
    const int fd = p->native_handle();
    if (fd < 0) return;
    linger l{};
    l.l_onoff = on ? 1 : 0;
    l.l_linger = 0;
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

// Whether a pipe ended only because its relay partner did (the library passes the end on).
bool passed_on(const EndInfo& e) {
    if (e.reason == EndReason::local_close) return e.error == errc::pipe_ended;
    return e.reason == EndReason::peer_reset && e.error.message.starts_with("the relayed pipe");
}

// The reason as one token for the --stats line ("peer close" -> "peer_close").
std::string reason_token(EndReason r) {
    std::string s = to_string(r);
    std::replace(s.begin(), s.end(), ' ', '_');
    return s;
}

Framer framer_of(Framing f) {
    return f == Framing::length ? Framer::message() : Framer::raw();
}

}  // namespace

struct RelayServer::Conn {
    std::uint64_t id = 0;
    Address client_addr;
    PipePtr client;  // null for a UDP source: its datagrams come through the listener
    PipePtr target;
    std::uint64_t start_ms = 0;
    std::optional<EndInfo> client_end, target_end;
    bool target_up = false;
    const char* closed_by_relay = nullptr;  // "idle_timeout" or "shutdown"
    std::uint64_t source_bytes = 0;         // UDP source: datagram bytes received from it
    std::uint64_t last_seen_bytes = 0, last_active_ms = 0;

    std::uint64_t up_bytes() const { return client ? client->stats().bytes_in : source_bytes; }
    std::uint64_t down_bytes() const { return target->stats().bytes_in; }
};

RelayServer::RelayServer(Loop& loop, RelayConfig config) : loop_(loop), config_(std::move(config)) {
    using std::chrono::milliseconds;
    const bool tcp_listen = is_stream(config_.listen.scheme);
    const bool tcp_target = is_stream(config_.target.scheme);
    client_conf_ = config_.conf;
    client_conf_.con_timeout = config_.connect_timeout;
    client_conf_.framer = framer_of(config_.framing);
    client_conf_.idle_timeout = milliseconds(0);
    client_conf_.frame_timeout = config_.framing == Framing::length
                                     ? config_.frame_timeout.value_or(kDefaultFrameTimeout)
                                     : milliseconds(0);
    if (tcp_listen && tcp_target) {
        // Each pipe of a TCP to TCP relay carries every byte of its connection (one direction
        // received, the other sent), so the pipes' own idle timeout is the connection's.
        client_conf_.idle_timeout = config_.idle_timeout.value_or(kDefaultTcpIdleTimeout);
    } else {
        // A UDP source has no pipe of its own, and a TCP side may be gone while the UDP side
        // still waits for replies: the relay sweeps its sessions itself.
        idle_timeout_ = config_.idle_timeout.value_or(kDefaultUdpIdleTimeout);
    }
    target_conf_ = client_conf_;
    // Datagrams are whole messages: no framer, no frame to time.
    auto datagrams = [](NetConf& conf) {
        conf.framer = Framer::raw();
        conf.frame_timeout = milliseconds(0);
    };
    if (!tcp_listen) datagrams(client_conf_);
    if (!tcp_target) datagrams(target_conf_);
    client_conf_.use_ssl = config_.listen.scheme == Scheme::tls;
    client_conf_.tls = config_.listen_tls;
    target_conf_.use_ssl = config_.target.scheme == Scheme::tls;
    target_conf_.tls = config_.target_tls;
    // A numeric TARGET is connected by address: its certificate is checked against the IP
    // (or --verify-host). A TARGET by name carries that name to the check and SNI.
    if (target_conf_.tls.server_name.empty()) target_conf_.tls.server_name = config_.target.host;
}

RelayServer::~RelayServer() {
    idle_timer_.cancel();
    grace_timer_.cancel();
    // The pipes' callbacks hold weak references: none of them reaches this object any more.
    for (auto& [id, c] : conns_) {
        if (c->client) c->client->close();
        if (c->target) c->target->close();
    }
    if (listener_) listener_->close();
}

Result<std::shared_ptr<RelayServer>> RelayServer::start(Loop& loop, RelayConfig config) {
    if (auto e = config.validate()) return e;
    if (!config.dns_servers.empty()) {
        ResolverConf dns;
        dns.servers = config.dns_servers;
        if (auto e = Resolver::configure(loop, dns)) return Error(e.code, "--dns: " + e.message);
    }
    std::shared_ptr<RelayServer> s(new RelayServer(loop, std::move(config)));
    if (auto e = s->open_listener()) return e;
    if (s->idle_timeout_) s->sweep_idle();  // relays with a UDP side
    return s;
}

Error RelayServer::open_listener() {
    NetConf conf = client_conf_;
    conf.reuse_addr = true;
    if (config_.listen.scheme == Scheme::tls) {
        // The accepted pipes hold their TLS sessions and are relayed as they are, with this
        // conf (client_conf_'s idle timeout). Handshakes under way count as the server's
        // clients: with room beyond --max-conns, a client over it is still reset (accept_tcp)
        // rather than left in the backlog.
        const std::size_t n = max_conns();
        conf.max_clients = n > std::numeric_limits<std::size_t>::max() / 2 ? 0 : 2 * n;
    } else {
        // The listening pipe relays no bytes of its own to time; accepted connections move to
        // pipes of their own (accept_tcp), which have client_conf_'s idle timeout.
        conf.idle_timeout = std::chrono::milliseconds(0);
    }
    std::weak_ptr<RelayServer> weak = weak_from_this();
    if (is_stream(config_.listen.scheme)) {
        auto server = Pipe::listen(loop_, config_.listen.address, conf);
        if (!server) return server.error();
        listener_ = *server;
        listener_->on_accept([weak](Pipe&, const PipePtr& accepted) {
            if (auto s = weak.lock()) s->accept_tcp(accepted);
        });
    } else {
        auto udp = Pipe::udp(loop_, config_.listen.address, {}, conf);
        if (!udp) return udp.error();
        listener_ = *udp;
        listener_->on_message([weak](Pipe&, const Message& m) {
            if (auto s = weak.lock()) s->on_datagram(m);
        });
    }
    // Failures the listener survives (out of file descriptors, a client's failed TLS
    // handshake): one line per report.
    listener_->on_error([weak](Pipe&, const Error& e) {
        auto s = weak.lock();
        if (!s) return;
        if (e == errc::tls_failed || e == errc::tls_handshake_timeout) {
            ++s->closed_.tls_failed;
            s->log("TLS handshake failed: " + e.message);
            return;
        }
        s->log((e == errc::accept_failed ? "accept failed: " : "") + e.message);
    });
    return {};
}

Address RelayServer::local_address() const {
    return listener_ ? listener_->local_address() : Address{};
}

std::size_t RelayServer::max_conns() const noexcept {
    if (config_.max_conns > 0) return config_.max_conns;
    return config_.listen.scheme == Scheme::udp ? kDefaultMaxUdpSources : kDefaultMaxTcpConns;
}

void RelayServer::log(const std::string& line) const {
    if (on_log_) on_log_(line);
}

Result<PipePtr> RelayServer::open_target(Conn& c) {
    // A name is resolved for each connection (no cache: a changed record is followed), by
    // the loop's Resolver, as connect() and udp() do it.
    const Endpoint& t = config_.target;
    const bool stream = is_stream(t.scheme);
    auto target = t.by_name() ? (stream ? Pipe::connect(loop_, t.host_port(), target_conf_)
                                        : Pipe::udp(loop_, t.host_port(), target_conf_))
                              : (stream ? Pipe::connect(loop_, t.address, target_conf_)
                                        : Pipe::udp(loop_, {}, t.address, target_conf_));
    if (!target) return target;
    c.target = *target;
    std::weak_ptr<RelayServer> weak = weak_from_this();
    const std::uint64_t id = c.id;
    c.target->on_up([weak, id](Pipe&) {
        auto s = weak.lock();
        if (!s) return;
        auto it = s->conns_.find(id);
        if (it == s->conns_.end()) return;
        Conn& conn = *it->second;
        conn.target_up = true;
        if (conn.client) set_reset_on_close(conn.client, false);
    });
    return target;
}

void RelayServer::watch(Conn& c) {
    std::weak_ptr<RelayServer> weak = weak_from_this();
    const std::uint64_t id = c.id;
    if (c.client)
        c.client->on_end([weak, id](Pipe&, const EndInfo& e) {
            if (auto s = weak.lock()) s->pipe_ended(id, true, e);
        });
    c.target->on_end([weak, id](Pipe&, const EndInfo& e) {
        if (auto s = weak.lock()) s->pipe_ended(id, false, e);
    });
    c.start_ms = c.last_active_ms = loop_.now_ms();
}

Result<PipePtr> RelayServer::own_pipe(const PipePtr& accepted) {
    // A TLS session lives in the pipe that made the handshake: that pipe is relayed, and stays
    // the listener's (shutdown() pauses the listener instead of closing it).
    if (config_.listen.scheme == Scheme::tls) return accepted;
    // The library closes a server's accepted pipes with the server. Moving the connection onto
    // a pipe of its own (a duplicate of its socket) lets shutdown() close the listening socket
    // while the relayed connections finish. The accepted pipe has not read yet: nothing is lost.
    const int fd = ::dup(accepted->native_handle());
    accepted->pause();
    accepted->close();
    if (fd < 0) return Error(errc::accept_failed, "dup failed");
    auto client = Pipe::adopt(loop_, fd, client_conf_);
    if (!client) ::close(fd);
    return client;
}

void RelayServer::accept_tcp(const PipePtr& accepted) {
    const Address peer = accepted->peer_address();
    if (!accepting_) {
        accepted->close();
        return;
    }
    if (conns_.size() >= max_conns()) {
        ++closed_.refused;
        set_reset_on_close(accepted, true);
        accepted->close();
        log("refused " + peer.to_string() + ": --max-conns " + std::to_string(max_conns()) +
            " connections are open");
        return;
    }
    auto client = own_pipe(accepted);
    if (!client) {
        log("dropped " + peer.to_string() + ": " + client.error().message);
        return;
    }
    auto c = std::make_unique<Conn>();
    c->id = next_id_++;
    c->client_addr = peer;
    c->client = *client;
    auto target = open_target(*c);
    Error e = target ? Pipe::relay(c->client, c->target) : target.error();
    if (e) {
        ++closed_.failed;
        log("conn " + std::to_string(c->id) + " from " + peer.to_string() + ": cannot relay to " +
            config_.target.text + ": " + e.message);
        set_reset_on_close(c->client, true);
        c->client->close();
        if (c->target) c->target->close();
        return;
    }
    // Until the target is up, the client is reset if it goes away: a client whose target cannot
    // be reached sees a reset, not an orderly (empty) end.
    if (is_stream(config_.target.scheme)) set_reset_on_close(c->client, true);
    ++closed_.accepted;
    watch(*c);
    conns_.emplace(c->id, std::move(c));
}

void RelayServer::on_datagram(const Message& m) {
    Conn* c = nullptr;
    if (auto it = sources_.find(m.from); it != sources_.end()) {
        c = conns_.at(it->second).get();
    } else {
        if (!accepting_ || conns_.size() >= max_conns()) {
            ++closed_.refused;
            ++closed_.dropped;
            return;
        }
        auto conn = std::make_unique<Conn>();
        conn->id = next_id_++;
        conn->client_addr = m.from;
        auto target = open_target(*conn);
        if (!target) {
            ++closed_.failed;
            ++closed_.dropped;
            log("source " + m.from.to_string() + ": cannot open a pipe to " + config_.target.text +
                ": " + target.error().message);
            return;
        }
        std::weak_ptr<RelayServer> weak = weak_from_this();
        const std::uint64_t id = conn->id;
        conn->target->on_message([weak, id](Pipe& target, const Message& reply) {
            auto s = weak.lock();
            if (!s) return;
            auto it = s->conns_.find(id);
            if (it == s->conns_.end()) return;
            // A UDP target pipe takes datagrams from anyone: only the target's are replies.
            if (s->config_.target.scheme == Scheme::udp && reply.from != target.peer_address()) {
                ++s->closed_.dropped;
                return;
            }
            if (s->listener_->send_to(reply.data, it->second->client_addr)) ++s->closed_.dropped;
        });
        ++closed_.accepted;
        watch(*conn);
        sources_.emplace(m.from, id);
        c = conn.get();
        conns_.emplace(id, std::move(conn));
    }
    c->source_bytes += m.data.size();
    // A datagram may be lost; a queue toward a slow TCP target may not grow without bound.
    if (!c->target->writable() || c->target->send(m.data)) ++closed_.dropped;
}

void RelayServer::pipe_ended(std::uint64_t id, bool client_side, const EndInfo& e) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& c = *it->second;
    (client_side ? c.client_end : c.target_end) = e;
    if (c.target_end && (!c.client || c.client_end)) finish(id);
}

void RelayServer::finish(std::uint64_t id) {
    auto it = conns_.find(id);
    std::unique_ptr<Conn> c = std::move(it->second);
    conns_.erase(it);
    if (!c->client) sources_.erase(c->client_addr);

    ConnReport r;
    r.id = c->id;
    r.client = c->client_addr;
    r.target = c->target->peer_address();  // empty when a name never resolved
    r.up_bytes = c->up_bytes();
    r.down_bytes = c->down_bytes();
    r.duration = std::chrono::milliseconds(loop_.now_ms() - c->start_ms);
    const EndInfo* why = nullptr;
    // The target never came up by its own failure, not because the client left first.
    const bool target_failed = !c->target_up && !passed_on(*c->target_end);
    if (c->closed_by_relay) {
        r.reason = c->closed_by_relay;
        r.side = "relay";
    } else if (target_failed || !c->client || (c->client_end && passed_on(*c->client_end))) {
        why = &*c->target_end;
        r.side = "target";
    } else {
        why = &*c->client_end;
        r.side = "client";
    }
    if (why) {
        r.reason = reason_token(why->reason);
        r.detail = why->error.message;
        // The pipes' own idle timeout (TCP to TCP) is the relay's, as the sweep's is.
        if (why->error == errc::idle_timeout) {
            r.reason = "idle_timeout";
            r.side = "relay";
        }
    }
    if (target_failed && !c->closed_by_relay) {
        ++closed_.failed;
        log("conn " + std::to_string(r.id) + " from " + r.client.to_string() + ": " +
            (r.detail.empty() ? r.reason : r.detail));
    }
    closed_.up_bytes += r.up_bytes;
    closed_.down_bytes += r.down_bytes;
    if (on_close_) on_close_(r);
    maybe_done();
}

RelayCounters RelayServer::counters() const {
    RelayCounters t = closed_;
    t.open = conns_.size();
    for (const auto& [id, c] : conns_) {
        t.up_bytes += c->up_bytes();
        t.down_bytes += c->down_bytes();
    }
    return t;
}

std::size_t RelayServer::queued_bytes() const {
    std::size_t n = listener_ ? listener_->write_queue_bytes() : 0;
    for (const auto& [id, c] : conns_) {
        if (c->client) n += c->client->write_queue_bytes();
        n += c->target->write_queue_bytes();
    }
    return n;
}

void RelayServer::close_conn(Conn& c, const char* reason) {
    if (!c.closed_by_relay && !c.client_end && !c.target_end) c.closed_by_relay = reason;
    if (c.client) c.client->close();
    c.target->close();
}

void RelayServer::close_all() {
    std::vector<Conn*> open;
    for (auto& [id, c] : conns_) open.push_back(c.get());
    for (Conn* c : open) close_conn(*c, "shutdown");
}

void RelayServer::sweep_idle() {
    const auto timeout = static_cast<std::uint64_t>(idle_timeout_->count());
    const std::uint64_t now = loop_.now_ms();
    std::vector<Conn*> idle;
    for (auto& [id, c] : conns_) {
        const std::uint64_t seen = c->up_bytes() + c->down_bytes();
        if (seen != c->last_seen_bytes) {
            c->last_seen_bytes = seen;
            c->last_active_ms = now;
        } else if (now - c->last_active_ms >= timeout) {
            idle.push_back(c.get());
        }
    }
    for (Conn* c : idle) close_conn(*c, "idle_timeout");
    // A quarter of the timeout between sweeps: a connection is closed within 1.25 timeouts.
    const auto period = std::clamp<std::uint64_t>(timeout / 4, 10, 1000);
    std::weak_ptr<RelayServer> weak = weak_from_this();
    idle_timer_ = loop_.call_later(std::chrono::milliseconds(period), [weak] {
        if (auto s = weak.lock()) s->sweep_idle();
    });
}

void RelayServer::shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
    accepting_ = false;
    done_ = std::move(done);
    // TCP: the relayed connections are pipes of their own, so closing the server leaves them.
    // TLS: they are the server's, which only stops accepting until they are gone. UDP: the
    // listener carries the replies; it closes once the last source is gone.
    if (listener_ && config_.listen.scheme == Scheme::tcp) listener_->close();
    if (listener_ && config_.listen.scheme == Scheme::tls) listener_->pause();
    std::weak_ptr<RelayServer> weak = weak_from_this();
    grace_timer_.cancel();
    grace_timer_ = loop_.call_later(grace, [weak] {
        if (auto s = weak.lock()) s->close_all();
    });
    maybe_done();
}

void RelayServer::maybe_done() {
    if (accepting_ || !conns_.empty() || !done_) return;
    idle_timer_.cancel();
    grace_timer_.cancel();
    if (listener_) listener_->close();
    auto done = std::move(done_);
    done_ = nullptr;
    done();
}

}  // namespace pipeworks::relay

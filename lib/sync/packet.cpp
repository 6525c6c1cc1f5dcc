// sync::PacketConnection: blocking requests over the packet layer, on the facade's loop.
#include <pipeworks/loop.hpp>
#include <pipeworks/sync.hpp>

#include "sync/pipe_side.hpp"

#include <algorithm>
#include <string>
#include <utility>

namespace pipeworks {
namespace detail {

// The loop half of a blocking packet connection. Loop-thread only.
struct SyncPacketSide {
    PacketConnectionPtr conn;
    EndWatch<Error> end;
    void close() {  // in order: what was queued goes first
        if (conn) conn->close();
    }
};

// The user's half.
struct SyncPacketState : SyncHalf<SyncPacketSide> {
    using SyncHalf::SyncHalf;
};

namespace {

struct PacketOpened {
    std::shared_ptr<SyncPacketSide> side;
    Address local, peer;
};

template <class Open>
Result<PacketOpened> packet_connect(std::shared_ptr<SyncEngine>& engine, const char* what,
                                    const PacketConf& packet_conf,
                                    std::chrono::milliseconds timeout, Open open) {
    Loop& loop = engine->loop();
    auto got = sync_call<Result<PacketOpened>>(
        *engine, timeout,
        [&loop, open = std::move(open), packet_conf, timeout, what](auto done) {
            Result<PipePtr> r = open(loop);
            if (!r) {
                done(Result<PacketOpened>(r.error()));
                return;
            }
            await_up(loop, *r, timeout, what, [done, packet_conf](Result<PipePtr> up) {
                if (!up) {
                    done(Result<PacketOpened>(up.error()));
                    return;
                }
                const PipePtr& p = *up;
                auto c = pipeworks::PacketConnection::open(p, packet_conf);
                if (!c) {
                    p->close();
                    done(Result<PacketOpened>(c.error()));
                    return;
                }
                auto side = std::make_shared<SyncPacketSide>();
                side->conn = *c;
                std::weak_ptr<SyncPacketSide> weak = side;
                side->conn->on_end([weak](pipeworks::PacketConnection&, const Error& e) {
                    if (auto s = weak.lock()) s->end.ended(e);
                });
                done(Result<PacketOpened>(
                    PacketOpened{side, p->local_address(), p->peer_address()}));
            });
        },
        [](Result<PacketOpened>& late) {
            if (late) late->side->conn->close();
        });
    if (!got) return sync_timeout_error(what, timeout);
    return std::move(*got);
}

}  // namespace
}  // namespace detail

namespace sync {

using detail::refuse_on_loop_thread;
using detail::sync_call;
using detail::sync_timeout_error;

PacketConnection::~PacketConnection() = default;

namespace {
constexpr const char* kConnect = "sync::PacketConnection::connect";
}

Result<PacketConnection> PacketConnection::connect(const Address& to, const NetConf& conf,
                                                   const PacketConf& packet_conf,
                                                   milliseconds timeout) {
    if (Error e = refuse_on_loop_thread(kConnect)) return e;
    if (Error e = packet_conf.validate()) return e;
    auto engine = detail::SyncEngine::acquire();
    auto r = detail::packet_connect(engine, kConnect, packet_conf, timeout, [to, conf](Loop& loop) {
        return pipeworks::Pipe::connect(loop, to, conf);
    });
    if (!r) return r.error();
    PacketConnection c;
    c.state_ = std::make_shared<detail::SyncPacketState>(std::move(engine), std::move(r->side));
    c.local_ = r->local;
    c.peer_ = r->peer;
    return c;
}

Result<PacketConnection> PacketConnection::connect(std::string_view host_port, const NetConf& conf,
                                                   const PacketConf& packet_conf,
                                                   milliseconds timeout) {
    if (Error e = refuse_on_loop_thread(kConnect)) return e;
    if (Error e = packet_conf.validate()) return e;
    auto engine = detail::SyncEngine::acquire();
    auto r = detail::packet_connect(engine, kConnect, packet_conf, timeout,
                                    [hp = std::string(host_port), conf](Loop& loop) {
                                        return pipeworks::Pipe::connect(loop, hp, conf);
                                    });
    if (!r) return r.error();
    PacketConnection c;
    c.state_ = std::make_shared<detail::SyncPacketState>(std::move(engine), std::move(r->side));
    c.local_ = r->local;
    c.peer_ = r->peer;
    return c;
}

PacketResult PacketConnection::request(std::uint64_t rq_type, std::uint64_t flags,
                                       std::string_view payload, std::uint64_t channel,
                                       milliseconds timeout) {
    constexpr const char* what = "sync::PacketConnection::request";
    PacketResult refused;
    if ((refused.error = refuse_on_loop_thread(what))) return refused;
    if (!state_) {
        refused.error =
            Error(errc::pipe_ended, std::string(what) + ": empty (never opened, or moved from)");
        return refused;
    }
    // The packet layer reads a timeout of 0 as "none": the shortest bound is 1 ms.
    const milliseconds bound = std::max(timeout, milliseconds(1));
    auto got =
        sync_call<PacketResult>(*state_->engine, bound,
                                [side = state_->side, rq_type, flags, body = std::string(payload),
                                 channel, bound](auto done) {
                                    side->conn->submit(
                                        rq_type, flags, body, channel,
                                        [done](PacketResult& r) { done(std::move(r)); }, bound);
                                });
    if (!got) {
        refused.error = sync_timeout_error(what, bound);
        return refused;
    }
    return std::move(*got);
}

Error PacketConnection::close(milliseconds timeout) {
    constexpr const char* what = "sync::PacketConnection::close";
    if (Error e = refuse_on_loop_thread(what)) return e;
    if (!state_) return Error(errc::pipe_ended, std::string(what) + ": empty");
    auto got =
        sync_call<Error>(*state_->engine, timeout, [side = state_->side, timeout](auto done) {
            detail::close_and_wait<Error>(
                side->conn->loop(), timeout, what, done, side->end, [&] { side->conn->close(); },
                [](const Error& e) { return e; });
        });
    if (!got) return sync_timeout_error(what, timeout);
    return std::move(*got);
}

}  // namespace sync
}  // namespace pipeworks

// PacketConnectionImpl: the one implementation behind every PacketConnection (connection.cpp
// holds its protocol, connection_api.cpp the public members). Bound to its loop's thread.
#pragma once

#include <pipeworks/loop.hpp>
#include <pipeworks/packet.hpp>

#include "packet/tag_table.hpp"
#include "packet/wire.hpp"
#include "platform/loop_core.hpp"

#include <chrono>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace pipeworks::detail {

using packet_wire::Packet;
using Ms = std::chrono::milliseconds;

class PacketConnectionImpl final : public PacketConnection {
public:
    PacketConnectionImpl(Loop& loop, const PacketConf& conf) : loop_(&loop), conf_(conf) {}

    static PacketConnectionImpl& of(PacketConnection& c) {
        return static_cast<PacketConnectionImpl&>(c);
    }
    static const PacketConnectionImpl& of(const PacketConnection& c) {
        return static_cast<const PacketConnectionImpl&>(c);
    }

    // A request of ours waiting for its response.
    struct Outgoing {
        PacketCallback done;
        std::uint64_t deadline = 0;  // loop time in ms; 0: none
        bool abandoned = false;      // timed out or cancelled: its response is dropped
    };
    struct Deadline {
        std::uint64_t at = 0;
        std::uint64_t channel = 0;
        std::uint64_t tag = 0;
        bool operator>(const Deadline& o) const noexcept { return at > o.at; }
    };

    Error attach(const PipePtr& pipe);
    void start();
    RequestId submit(std::uint64_t rq_type, std::uint64_t flags, std::string_view payload,
                     std::uint64_t channel, PacketCallback done, std::optional<Ms> timeout);
    bool cancel(RequestId id);
    PacketCallback abandon(std::uint64_t channel, std::uint64_t tag, Outgoing& o);
    void end_requests();
    void close();
    CallbackId on_end(EndFn fn);
    bool remove(CallbackId id);

    PacketResponder defer(PacketRequest& rq);
    bool answer_deferred(std::uint64_t channel, std::uint64_t tag, std::uint64_t serial,
                         HandlerResult&& result);
    bool deferred_pending(std::uint64_t channel, std::uint64_t tag, std::uint64_t serial) {
        const std::uint64_t* s = incoming_.find(channel, tag);
        return s != nullptr && *s == serial;
    }

    // ---- receiving
    void on_packet(std::string_view body);
    void on_request(const Packet& p);
    void on_response(const Packet& p);
    void on_peer_eof();
    void on_pipe_end(const EndInfo& info);

    // ---- sending
    Error send_packet(const Packet& p);
    void respond(std::uint64_t channel, std::uint64_t tag, HandlerResult&& result);
    void refuse(const Packet& request, std::string reason);
    void maybe_send_eof();
    void refuse_later(PacketCallback done, Error error);

    // ---- deadlines and the end
    void add_deadline(std::uint64_t at, std::uint64_t channel, std::uint64_t tag);
    void arm_deadlines();
    void on_deadlines();
    void fail_pending(const Error& error);
    void protocol_error(std::string message);
    void end(Error error);
    void run_end_callbacks();
    std::string describe() const;

    Loop* loop_;
    PacketConf conf_;
    PipePtr pipe_;
    ConnectFn connect_;
    Error connect_error_;  // what the connect function of an on-demand connection returned

    bool started_ = false;            // a pipe is attached (or the connect function has failed)
    bool sent_erq_ = false;           // end_requests(): no more requests of ours
    bool sent_eof_ = false;           // our EOF went out: nothing more does
    bool peer_erq_ = false;           // the peer's ERQ (or EOF) came: its requests are refused
    bool peer_eof_ = false;           // the peer's EOF came: we read no more
    bool closing_ = false;            // close() (or the peer's EOF) started the shutdown
    bool ended_ = false;              // end() ran: the end callbacks have run or are posted
    std::optional<Error> end_error_;  // the first failure seen, or the orderly end (empty)

    packet_detail::TagTable<Outgoing> outgoing_;
    std::size_t abandoned_ = 0;  // entries of outgoing_ that only wait to drop their response
    packet_detail::TagTable<std::uint64_t> incoming_;  // deferred requests of the peer: serial
    std::uint64_t next_tag0_ = 2;                      // channel 0: 0 and 1 are EOF and ERQ
    std::unordered_map<std::uint64_t, std::uint64_t> next_tags_;  // the other channels
    std::unordered_map<std::uint64_t, std::shared_ptr<const PacketHandler>> handlers_;
    std::vector<Deadline> deadlines_;  // a min-heap; entries of answered requests stay lazily
    Timer deadline_timer_;
    std::uint64_t armed_for_ = 0;  // the deadline deadline_timer_ fires at
    Timer close_timer_;
    std::string scratch_;  // the packet being sent
    PacketRequest* dispatching_ = nullptr;
    std::uint64_t next_serial_ = 0;
    PacketStats stats_;
    std::vector<std::pair<CallbackId, EndFn>> end_cbs_;
    CallbackId next_cb_id_ = 0;
};

}  // namespace pipeworks::detail

// PacketConnection: requests and responses of cs.packetstream over a stream pipe.
//
// Data path. The pipe's length framer (varint_be128, max_message = max_packet) splits the
// stream into bodies and checks each length before it keeps a byte of the body; decode_body()
// reads a body in place. To send, a packet is encoded into one reused buffer and its body handed
// to Pipe::send, which adds the length and gathers the sends of one loop iteration into one
// write. Pending requests live in a flat table and their deadlines in a heap behind one timer,
// so a request allocates nothing beyond its callback (when that does not fit std::function's
// small buffer) and its response payload.
#include <pipeworks/loop.hpp>
#include <pipeworks/packet.hpp>

#include "packet/connection_impl.hpp"

#include <algorithm>
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace pipeworks {

namespace {

using packet_wire::Packet;
using Ms = std::chrono::milliseconds;

constexpr std::size_t kMaxPacketLimit = std::size_t{1} << 30;
// A send buffer grown past this by a large packet is given back after it.
constexpr std::size_t kScratchKeep = 64 * 1024;

std::string num(std::uint64_t v) {
    return std::to_string(v);
}

std::string where(std::uint64_t channel, std::uint64_t tag) {
    return "(channel " + num(channel) + ", tag " + num(tag) + ")";
}

// The pipe's framer carries max_packet as its max_message: its errors name the field the
// user of the packet layer set.
std::string in_packet_terms(std::string message) {
    constexpr std::string_view framer_field = "Framer.max_message";
    constexpr std::string_view packet_field = "PacketConf.max_packet";
    const std::size_t at = message.find(framer_field);
    if (at != std::string::npos) message.replace(at, framer_field.size(), packet_field);
    return message;
}

}  // namespace

Error PacketConf::validate() const {
    if (max_packet == 0 || max_packet > kMaxPacketLimit)
        return Error(errc::invalid_config,
                     "PacketConf.max_packet: must be 1 to 2^30 bytes, got " + num(max_packet));
    if (request_timeout.count() < 0)
        return Error(errc::invalid_config, "PacketConf.request_timeout: must be >= 0");
    if (close_timeout.count() < 0)
        return Error(errc::invalid_config, "PacketConf.close_timeout: must be >= 0");
    if (max_peer_requests == 0)
        return Error(errc::invalid_config, "PacketConf.max_peer_requests: must be >= 1");
    if (max_outstanding == 0)
        return Error(errc::invalid_config, "PacketConf.max_outstanding: must be >= 1");
    return {};
}

namespace detail {

std::string PacketConnectionImpl::describe() const {
    if (!pipe_) return "packet connection";
    return "packet connection with " + pipe_->peer_address().to_string();
}

// ---------------------------------------------------------------- opening

Error PacketConnectionImpl::attach(const PipePtr& pipe) {
    if (!pipe) return Error(errc::invalid_config, "packet connection: the pipe is null");
    if (&pipe->loop() != loop_)
        return Error(errc::invalid_config, "packet connection: the pipe is on another loop");
    if (pipe->kind() != PipeKind::tcp_client && pipe->kind() != PipeKind::tcp_accepted)
        return Error(errc::wrong_pipe_kind, std::string("packet connection: needs a stream pipe, "
                                                        "got a ") +
                                                to_string(pipe->kind()));
    if (pipe->ending() || pipe->ended())
        return Error(errc::pipe_ended, "packet connection: the pipe has ended");
    Framer framer = Framer::length_prefixed(0, LengthEncoding::varint_be128);
    framer.max_message = conf_.max_packet;
    if (Error e = pipe->set_framer(framer)) return e;
    pipe_ = pipe;
    started_ = true;
    // The end callback owns the connection while the pipe is open (the pipe drops its
    // callbacks once it has ended), so the message callback may use a plain pointer.
    auto self = std::static_pointer_cast<PacketConnectionImpl>(shared_from_this());
    pipe->on_message([this](Pipe&, const Message& m) { on_packet(m.data); });
    pipe->on_end([self](Pipe&, const EndInfo& info) { self->on_pipe_end(info); });
    return {};
}

void PacketConnectionImpl::start() {
    if (started_ || ended_ || !connect_) return;
    started_ = true;
    ConnectFn connect = std::move(connect_);
    connect_ = nullptr;
    Result<PipePtr> r = connect(*loop_);
    if (!r) {
        // The caller's own Error, untouched: its requests and the end report what it said.
        connect_error_ = r.error();
        end(connect_error_);
        return;
    }
    if (Error e = attach(*r)) {
        e.message = "packet connection: connect: " + e.message;
        connect_error_ = e;
        end(std::move(e));
    }
}

// ---------------------------------------------------------------- requests of ours

void PacketConnectionImpl::refuse_later(PacketCallback done, Error error) {
    if (!done) return;
    loop_->call_later(Ms(0), [done = std::move(done), error = std::move(error)]() mutable {
        PacketResult r;
        r.error = std::move(error);
        done(r);
    });
}

RequestId PacketConnectionImpl::submit(std::uint64_t rq_type, std::uint64_t flags,
                                       std::string_view payload, std::uint64_t channel,
                                       PacketCallback done, std::optional<Ms> timeout) {
    if (!started_ && !sent_erq_) start();  // first use (not when it would only be refused)
    Error refused;
    if (ended_ && connect_error_)
        refused = connect_error_;
    else if (ended_)
        refused = Error(errc::pipe_ended, "submit: the " + describe() + " has ended");
    else if (peer_eof_)
        refused = Error(errc::pipe_ended, "submit: connection ended: the peer sent EOF");
    else if (sent_erq_)
        refused =
            Error(errc::pipe_ended, "submit: requests ended on this side (end_requests or close)");
    else if (flags > packet_wire::kMaxRequestFlags)
        refused = Error(errc::invalid_config,
                        "submit: request flags " + num(flags) + " do not fit (at most 2^62 - 1)");
    else if (rq_type == UINT64_MAX)
        refused = Error(errc::invalid_config, "submit: rq_type 2^64 - 1 has no wire rq_type");
    else if (outgoing_.size() - abandoned_ >= conf_.max_outstanding)
        refused = Error(errc::queue_full, "submit: " + num(outgoing_.size() - abandoned_) +
                                              " requests already wait for a response "
                                              "(PacketConf.max_outstanding)");
    if (refused) {
        refuse_later(std::move(done), std::move(refused));
        return {};
    }
    std::uint64_t tag = 0;
    if (channel == 0)
        tag = next_tag0_++;
    else
        tag = next_tags_[channel]++;
    Packet p;
    p.tag = tag;
    p.channel = channel;
    p.is_request = true;
    p.rq_type = rq_type + 1;
    p.flags = flags;
    p.payload = payload;
    if (Error e = send_packet(p)) {
        refuse_later(std::move(done), std::move(e));
        return {};
    }
    ++stats_.requests_sent;
    Outgoing& o = outgoing_.insert(channel, tag, Outgoing{std::move(done), 0, false});
    const Ms t = timeout.value_or(conf_.request_timeout);
    if (t.count() > 0) {
        o.deadline = loop_->now_ms() + static_cast<std::uint64_t>(t.count());
        add_deadline(o.deadline, channel, tag);
    }
    return {channel, tag, true};
}

bool PacketConnectionImpl::cancel(RequestId id) {
    if (!id.valid) return false;
    Outgoing* o = outgoing_.find(id.channel, id.tag);
    if (o == nullptr || o->abandoned) return false;
    PacketCallback done = abandon(id.channel, id.tag, *o);
    PacketResult r;
    r.error = Error(errc::request_cancelled, "request " + where(id.channel, id.tag) + " cancelled");
    if (done) done(r);
    return true;
}

// Gives up waiting for (channel, tag): its response, should it come, is dropped. Returns the
// callback, still to be told why.
PacketCallback PacketConnectionImpl::abandon(std::uint64_t channel, std::uint64_t tag,
                                             Outgoing& o) {
    PacketCallback done = std::move(o.done);
    o.done = nullptr;
    if (abandoned_ >= conf_.max_abandoned) {
        // Tags are never reused, so a forgotten request's response can only be unmatched.
        outgoing_.erase(channel, tag);
        return done;
    }
    o.abandoned = true;
    ++abandoned_;
    return done;
}

// ---------------------------------------------------------------- deadlines

void PacketConnectionImpl::add_deadline(std::uint64_t at, std::uint64_t channel,
                                        std::uint64_t tag) {
    // Entries of answered requests stay until they expire; when they outnumber the live ones,
    // rebuild the heap from the live ones (amortised constant time per request).
    if (deadlines_.size() > 64 && deadlines_.size() > 2 * outgoing_.size()) {
        std::erase_if(deadlines_, [this](const Deadline& d) {
            const Outgoing* o = outgoing_.find(d.channel, d.tag);
            return o == nullptr || o->abandoned || o->deadline != d.at;
        });
        std::make_heap(deadlines_.begin(), deadlines_.end(), std::greater<>{});
    }
    deadlines_.push_back({at, channel, tag});
    std::push_heap(deadlines_.begin(), deadlines_.end(), std::greater<>{});
    arm_deadlines();
}

void PacketConnectionImpl::arm_deadlines() {
    if (deadlines_.empty()) {
        deadline_timer_.cancel();
        return;
    }
    const std::uint64_t next = deadlines_.front().at;
    if (deadline_timer_.active() && armed_for_ <= next) return;
    deadline_timer_.cancel();
    armed_for_ = next;
    const std::uint64_t now = loop_->now_ms();
    std::weak_ptr<PacketConnection> weak = weak_from_this();
    deadline_timer_ = loop_->call_later(Ms(next > now ? next - now : 0), [weak] {
        if (auto s = weak.lock()) of(*s).on_deadlines();
    });
}

void PacketConnectionImpl::on_deadlines() {
    const std::uint64_t now = loop_->now_ms();
    auto keep = shared_from_this();
    while (!deadlines_.empty() && deadlines_.front().at <= now && !ended_) {
        std::pop_heap(deadlines_.begin(), deadlines_.end(), std::greater<>{});
        const Deadline d = deadlines_.back();
        deadlines_.pop_back();
        Outgoing* o = outgoing_.find(d.channel, d.tag);
        if (o == nullptr || o->abandoned || o->deadline != d.at) continue;
        PacketCallback done = abandon(d.channel, d.tag, *o);
        ++stats_.timeouts;
        PacketResult r;
        r.error = Error(errc::request_timeout,
                        "request " + where(d.channel, d.tag) + " to " +
                            (pipe_ ? pipe_->peer_address().to_string() : std::string("the peer")) +
                            ": no response within the timeout");
        if (done) done(r);
    }
    if (!ended_) arm_deadlines();
}

// ---------------------------------------------------------------- receiving

void PacketConnectionImpl::on_packet(std::string_view body) {
    if (ended_ || peer_eof_ || end_error_) return;
    Result<Packet> r = packet_wire::decode_body(body);
    if (!r) {
        protocol_error("packet from " + pipe_->peer_address().to_string() + ": " +
                       r.error().message);
        return;
    }
    if (r->is_request)
        on_request(*r);
    else
        on_response(*r);
}

void PacketConnectionImpl::on_response(const Packet& p) {
    Outgoing* o = outgoing_.find(p.channel, p.tag);
    if (o == nullptr) {
        ++stats_.unmatched_responses;  // nothing of ours is waiting for it: dropped
        return;
    }
    if (o->abandoned) {
        ++stats_.late_responses;
        --abandoned_;
        outgoing_.erase(p.channel, p.tag);
        return;
    }
    PacketCallback done = std::move(o->done);
    outgoing_.erase(p.channel, p.tag);
    ++stats_.responses_received;
    PacketResult r;
    r.ok = p.ok;
    r.flags = p.flags;
    r.payload.assign(p.payload);
    if (done) done(r);
}

void PacketConnectionImpl::on_request(const Packet& p) {
    if (packet_wire::is_eof(p)) {
        on_peer_eof();
        return;
    }
    if (packet_wire::is_erq(p)) {
        peer_erq_ = true;
        return;
    }
    // Python refuses a reused tag and stays up. Only a broken peer reuses a tag in use (Python's
    // own sender never does), and it could not tell the two answers apart.
    if (incoming_.find(p.channel, p.tag) != nullptr)
        return protocol_error(describe() + ": the peer reused tag " + num(p.tag) + " on channel " +
                              num(p.channel) + " while it was still in use");
    if (incoming_.size() >= conf_.max_peer_requests)
        return protocol_error(describe() + ": the peer sent a request while " +
                              num(incoming_.size()) +
                              " of its requests were waiting for an answer "
                              "(PacketConf.max_peer_requests)");
    ++stats_.requests_received;
    if (sent_eof_) {
        ++stats_.unanswerable;  // our EOF is out: nothing may follow it
        return;
    }
    // Python's texts, so that either peer's refusals read the same.
    if (peer_erq_) return refuse(p, "requests no longer allowed");
    const std::uint64_t type = p.rq_type - 1;  // wire rq_type 0 is EOF or ERQ, handled above
    auto h = handlers_.find(type);
    if (h == handlers_.end()) return refuse(p, "no handler for rq_type " + num(type));
    // Held during the call: the handler may replace itself.
    std::shared_ptr<const PacketHandler> handler = h->second;
    PacketRequest rq(*this);
    rq.type = type;
    rq.flags = p.flags;
    rq.channel = p.channel;
    rq.tag = p.tag;
    rq.payload = p.payload;
    HandlerResult result;
    std::optional<std::string> failure;
    PacketRequest* outer = dispatching_;
    dispatching_ = &rq;
    try {
        result = (*handler)(rq);
    } catch (const std::exception& e) {
        failure = e.what();
    } catch (...) {
        failure = "the handler threw an exception that is not a std::exception";
    }
    dispatching_ = outer;
    if (ended_ || sent_eof_) return;
    if (rq.deferred_) {
        // A responder took the request over; a handler that threw after defer() answers now.
        if (failure) {
            if (std::uint64_t* serial = incoming_.find(p.channel, p.tag))
                answer_deferred(p.channel, p.tag, *serial, PacketFailure{std::move(*failure)});
        }
        return;
    }
    respond(p.channel, p.tag,
            failure ? HandlerResult(PacketFailure{std::move(*failure)}) : std::move(result));
    maybe_send_eof();
}

void PacketConnectionImpl::on_peer_eof() {
    peer_eof_ = true;
    peer_erq_ = true;
    // Nothing after EOF is read; the pipe stays open for what we still send.
    pipe_->pause();
    fail_pending(Error(errc::pipe_ended, "connection ended: the peer (" +
                                             pipe_->peer_address().to_string() +
                                             ") sent EOF before the response"));
    if (ended_) return;
    if (sent_eof_)
        pipe_->close();  // both EOFs: the shutdown is complete
    else if (!closing_)
        close();
    else
        maybe_send_eof();
}

void PacketConnectionImpl::on_pipe_end(const EndInfo& info) {
    if (ended_) return;
    Error e;
    if (end_error_) {
        e = *end_error_;  // a protocol error or a close timeout closed the pipe
    } else if (peer_eof_ && sent_eof_) {
        // Both EOFs: the orderly end, however the pipe then closed.
    } else if (info.reason == EndReason::framing_error && info.partial_frame_bytes > 0) {
        e = Error(errc::protocol_error, describe() +
                                            ": a truncated final packet: the stream ended after " +
                                            num(info.partial_frame_bytes) + " bytes of it");
    } else if (info.reason == EndReason::framing_error) {
        // The length framer: a malformed or overlong length, or a body over max_packet.
        e = Error(errc::protocol_error, describe() + ": " + in_packet_terms(info.error.message));
    } else if (info.reason == EndReason::peer_close && !peer_eof_) {
        e = Error(errc::protocol_error,
                  describe() + ": the stream ended between packets without the peer's EOF");
    } else {
        std::string m = "connection ended: " + describe() + ": " + to_string(info.reason);
        if (info.error) m += ": " + info.error.message;
        e = Error(info.error ? info.error.code : make_error_code(errc::pipe_ended), std::move(m));
    }
    end(std::move(e));
}

// ---------------------------------------------------------------- handlers

PacketResponder PacketConnectionImpl::defer(PacketRequest& rq) {
    if (rq.deferred_ || dispatching_ != &rq || ended_) return {};
    rq.deferred_ = true;
    const std::uint64_t serial = ++next_serial_;
    incoming_.insert(rq.channel, rq.tag, serial);
    stats_.handlers_in_flight = incoming_.size();
    return PacketResponder(std::static_pointer_cast<PacketConnectionImpl>(shared_from_this()),
                           rq.channel, rq.tag, serial);
}

bool PacketConnectionImpl::answer_deferred(std::uint64_t channel, std::uint64_t tag,
                                           std::uint64_t serial, HandlerResult&& result) {
    if (!deferred_pending(channel, tag, serial)) return false;
    incoming_.erase(channel, tag);
    stats_.handlers_in_flight = incoming_.size();
    if (ended_ || sent_eof_) return false;
    respond(channel, tag, std::move(result));
    maybe_send_eof();
    return true;
}

// ---------------------------------------------------------------- sending

Error PacketConnectionImpl::send_packet(const Packet& p) {
    if (!pipe_ || sent_eof_)
        return Error(errc::pipe_ended, "send: the " + describe() + " has ended");
    scratch_.clear();
    if (Error e = packet_wire::encode(p, scratch_)) return e;
    // The pipe's framer writes the length again: hand it the body.
    const std::size_t prefix = packet_wire::read_bsuint(scratch_)->size;
    Error e = pipe_->send(std::string_view(scratch_).substr(prefix));
    if (scratch_.capacity() > kScratchKeep) {
        scratch_.clear();
        scratch_.shrink_to_fit();
    }
    return e;
}

void PacketConnectionImpl::respond(std::uint64_t channel, std::uint64_t tag,
                                   HandlerResult&& result) {
    Packet p;
    p.tag = tag;
    p.channel = channel;
    p.ok = true;
    std::visit(
        [&p](auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::uint64_t>) {
                p.flags = v;
            } else if constexpr (std::is_same_v<T, std::string>) {
                p.payload = v;
            } else if constexpr (std::is_same_v<T, std::u8string>) {
                p.payload = std::string_view(reinterpret_cast<const char*>(v.data()), v.size());
            } else if constexpr (std::is_same_v<T, PacketReply>) {
                p.flags = v.flags;
                p.payload = v.payload;
            } else if constexpr (std::is_same_v<T, PacketFailure>) {
                p.ok = false;
                p.payload = v.reason;
            }
        },
        result);
    std::string reason;
    if (p.ok && p.flags > packet_wire::kMaxResponseFlags)
        reason = "response flags " + num(p.flags) + " do not fit (at most 2^61 - 1)";
    Error e;
    if (reason.empty()) {
        e = send_packet(p);
        if (e == errc::message_too_large || e == errc::invalid_config)
            reason = "the response cannot be sent: " + e.message;
    }
    if (!reason.empty()) {
        // The peer still gets an answer: a failure saying why the real one could not go.
        p.ok = false;
        p.flags = 0;
        p.payload = reason;
        e = send_packet(p);
    }
    if (!e) ++stats_.responses_sent;
}

void PacketConnectionImpl::refuse(const Packet& request, std::string reason) {
    ++stats_.refused;
    respond(request.channel, request.tag, PacketFailure{std::move(reason)});
}

void PacketConnectionImpl::maybe_send_eof() {
    // A handler running now (it may have called close()) answers first.
    if (!closing_ || sent_eof_ || ended_ || !incoming_.empty() || dispatching_ || !pipe_) return;
    if (Error e = pipe_->send(packet_wire::kEofBytes.substr(1))) {
        sent_eof_ = true;
        return;  // the pipe is ending: its end callback ends the connection
    }
    sent_eof_ = true;
    if (peer_eof_) pipe_->close();  // both EOFs: what is queued goes out, then the pipe closes
}

void PacketConnectionImpl::end_requests() {
    if (sent_erq_ || ended_) return;
    sent_erq_ = true;
    if (!started_) return;  // an on-demand connection never used: nothing to tell
    if (pipe_) (void)pipe_->send(packet_wire::kErqBytes.substr(1));  // refused: it has ended
}

void PacketConnectionImpl::close() {
    if (closing_ || ended_) return;
    closing_ = true;
    if (!pipe_) {
        sent_erq_ = true;
        end({});  // never connected: nothing to shut down
        return;
    }
    if (conf_.close_timeout.count() > 0) {
        std::weak_ptr<PacketConnection> weak = weak_from_this();
        close_timer_ = loop_->call_later(conf_.close_timeout, [weak] {
            auto s = weak.lock();
            if (!s) return;
            auto& c = of(*s);
            if (c.ended_) return;
            std::string m = "close: ";
            if (!c.sent_eof_)
                m += num(c.incoming_.size()) + " handler(s) still answering";
            else
                m += "no EOF from the peer";
            m += " after " + num(static_cast<std::uint64_t>(c.conf_.close_timeout.count())) + " ms";
            c.end_error_ = Error(errc::close_timeout, std::move(m));
            c.fail_pending(*c.end_error_);
            c.pipe_->close();
        });
    }
    end_requests();
    maybe_send_eof();
}

// ---------------------------------------------------------------- the end

void PacketConnectionImpl::fail_pending(const Error& error) {
    if (outgoing_.empty()) return;
    auto keep = shared_from_this();
    std::vector<packet_detail::TagTable<Outgoing>::Entry> all = outgoing_.take_all();
    abandoned_ = 0;
    // In the order they were submitted on each channel.
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        return a.channel != b.channel ? a.channel < b.channel : a.tag < b.tag;
    });
    deadlines_.clear();
    deadline_timer_.cancel();
    for (auto& e : all) {
        if (e.value.abandoned || !e.value.done) continue;
        PacketResult r;
        r.error = error;
        r.error.message += " " + where(e.channel, e.tag);
        e.value.done(r);
    }
}

void PacketConnectionImpl::protocol_error(std::string message) {
    if (end_error_ || ended_) return;
    end_error_ = Error(errc::protocol_error, std::move(message));
    fail_pending(*end_error_);
    if (pipe_) pipe_->close();  // its end callback ends the connection
}

void PacketConnectionImpl::end(Error error) {
    if (ended_) return;
    auto keep = shared_from_this();
    if (!end_error_) end_error_ = error;
    fail_pending(error ? error
                       : Error(errc::pipe_ended,
                               "connection ended: " + describe() + " closed before the response"));
    ended_ = true;
    incoming_.take_all();  // deferred handlers' responders now do nothing
    stats_.handlers_in_flight = 0;
    deadlines_.clear();
    deadline_timer_.cancel();
    close_timer_.cancel();
    if (pipe_)
        run_end_callbacks();
    else  // never attached: ended inside a call of the user's; tell it in a later iteration
        loop_->call_later(Ms(0), [keep] { of(*keep).run_end_callbacks(); });
}

void PacketConnectionImpl::run_end_callbacks() {
    auto cbs = std::move(end_cbs_);
    end_cbs_.clear();
    const Error e = end_error_.value_or(Error{});
    for (auto& [id, fn] : cbs) fn(*this, e);
}

CallbackId PacketConnectionImpl::on_end(EndFn fn) {
    const CallbackId id = ++next_cb_id_;
    if (ended_) {
        auto keep = shared_from_this();
        loop_->call_later(Ms(0), [keep, fn = std::move(fn)] {
            fn(*keep, of(*keep).end_error_.value_or(Error{}));
        });
        return id;
    }
    end_cbs_.emplace_back(id, std::move(fn));
    return id;
}

bool PacketConnectionImpl::remove(CallbackId id) {
    return std::erase_if(end_cbs_, [id](const auto& c) { return c.first == id; }) > 0;
}

}  // namespace detail
}  // namespace pipeworks

// ReconnectingClient: a TCP client that connects again, with backoff, whenever its connection
// is lost or cannot be made, until closed or out of attempts (docs/guide.md, "Reconnecting").
//
// Each connection is a Pipe of its own; the client holds the callbacks and gives them to every
// connection, so they are registered once. A Pipe's end is final, a client's connection is not:
// on_up and on_down run once per connection, on_end once for the client.
//
// Threading: bound to its Loop's thread, like Pipe; every member and callback runs there.
// Lifetime: shared-owned; while it has not ended the library holds a reference, so dropping
// yours does not stop it (close() does). ~Loop stops it without running its callbacks.
#pragma once

#include <pipeworks/address.hpp>
#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/net_conf.hpp>
#include <pipeworks/pipe.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace pipeworks {

class Loop;
class ReconnectingClient;
using ReconnectingClientPtr = std::shared_ptr<ReconnectingClient>;

// When a ReconnectingClient tries again. A plain value; validated by open().
struct ReconnectConf {
    // The pause before the first new attempt after a loss or a failed connect; each further
    // pause in a row doubles it, up to max_delay; it starts over once a connection is up.
    std::chrono::milliseconds min_delay{500};
    std::chrono::milliseconds max_delay{30'000};
    // Connects in a row that may fail (the first one included) before the client ends; 0:
    // no limit.
    int max_attempts = 0;
};

class PIPEWORKS_API ReconnectingClient : public std::enable_shared_from_this<ReconnectingClient> {
public:
    using MessageFn = Pipe::MessageFn;
    using UpFn = Pipe::UpFn;
    using EndFn = Pipe::EndFn;
    // A connect failed or a connection was lost: retry number `retry` (1, 2, ... since the
    // last connection was up, or since open()) starts after `delay`; `why` is how the last
    // connection or connect ended.
    using RetryFn = std::function<void(ReconnectingClient&, int retry,
                                       std::chrono::milliseconds delay, const EndInfo& why)>;
    using ClientEndFn = std::function<void(ReconnectingClient&, const EndInfo&)>;

    // Starts connecting to `to` (an address, or "host:port" resolved again for every attempt,
    // as Pipe::connect does), with `conf` for every connection. Errors: what Pipe::connect
    // refuses at once, a bad ReconnectConf (errc::invalid_config naming the field). A
    // connection that cannot be made is no error here: the client tries again.
    static Result<ReconnectingClientPtr> open(Loop& loop, const Address& to,
                                              const NetConf& conf = {},
                                              const ReconnectConf& reconnect = {});
    static Result<ReconnectingClientPtr> open(Loop& loop, std::string_view host_port,
                                              const NetConf& conf = {},
                                              const ReconnectConf& reconnect = {});

    // Callbacks, given to every connection (Pipe& is that connection). Each add returns a
    // token for remove(); one added while a connection is open applies from the next one.
    CallbackId on_message(MessageFn fn);
    CallbackId on_up(UpFn fn);        // once per connection, when it is up
    CallbackId on_down(EndFn fn);     // once per connection that was up, when it is lost
    CallbackId on_retry(RetryFn fn);  // before each pause: which retry, after how long
    // Exactly once: close() was called (local_close), a connection was closed through
    // connection()->close() (local_close), a callback threw (errc::callback_threw; the
    // exception goes on to Loop::run()), or max_attempts connects failed in a row (the last
    // failure's reason, its error saying how many). Nothing runs after it.
    CallbackId on_end(ClientEndFn fn);
    bool remove(CallbackId id);

    // Sends on the current connection. While none is up (connecting, or waiting to try again)
    // the bytes are refused (errc::not_connected): nothing is kept across connections, so a
    // lost connection's unsent bytes are told by on_down's EndInfo::unsent_bytes.
    Error send(std::string_view bytes);
    // Stops reconnecting and closes the current connection (its queued bytes go out first, as
    // Pipe::close() does); on_end runs once it has closed. Idempotent.
    void close();

    // The current connection (up or connecting); null while waiting to try again or ended.
    PipePtr connection() const;
    bool is_up() const noexcept;
    bool ended() const noexcept;
    // Connects that failed in a row since the last connection was up.
    int failed_attempts() const noexcept;
    // Connections that came up so far.
    int connections() const noexcept;

    ReconnectingClient(const ReconnectingClient&) = delete;
    ReconnectingClient& operator=(const ReconnectingClient&) = delete;
    ~ReconnectingClient();

private:
    struct Impl;
    explicit ReconnectingClient(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace pipeworks

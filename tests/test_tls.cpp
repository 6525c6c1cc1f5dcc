// TlsFilter in a pipe's byte filter seam: handshakes, bulk data both ways, a refused
// certificate and framed messages, on TCP pairs over loopback. The certificates are made here
// at test time, so nothing expires in the tree.
#include "pipe_support.hpp"
#include "tls_support.hpp"
#include "transport/pipe_impl.hpp"
#include "transport/tls_filter.hpp"

#include <pipeworks/pipeworks.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <functional>
#include <memory>
#include <string>

using namespace pipeworks;
using namespace pw_test;

namespace {

// A test CA, a server certificate it signed, and the contexts both ends use.
struct Pki {
    Key ca_key = ec_key();
    Cert ca = make_cert(ca_key.get(), "pipeworks test CA", nullptr, nullptr, 1, true);
    Key server_key = ec_key();
    Cert server_cert = make_cert(server_key.get(), "localhost", ca.get(), ca_key.get(), 2, false);

    Ctx server_ctx() const {
        Ctx ctx(SSL_CTX_new(TLS_server_method()));
        REQUIRE(ctx);
        REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1);
        REQUIRE(SSL_CTX_use_certificate(ctx.get(), server_cert.get()) == 1);
        REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), server_key.get()) == 1);
        return ctx;
    }
    // trust_ca false: a client that knows no CA at all, so the server's chain cannot verify.
    Ctx client_ctx(bool trust_ca = true) const {
        Ctx ctx(SSL_CTX_new(TLS_client_method()));
        REQUIRE(ctx);
        REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1);
        if (trust_ca)
            REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca.get()) == 1);
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
        return ctx;
    }
};

const Pki& pki() {
    static const Pki p;
    return p;
}

std::string loopback_host(Family f) {
    return f == Family::ipv4 ? "127.0.0.1" : "::1";
}

struct TlsEnds {
    detail::TlsFilter* client = nullptr;
    detail::TlsFilter* server = nullptr;
};

// Puts TLS into both ends of a pair that is up and has exchanged nothing yet. The client's
// ClientHello leaves with its first flush: every test sends from the client first.
TlsEnds install_tls(TcpPair& pair, Family f, SSL_CTX* client_ctx, SSL_CTX* server_ctx) {
    auto cf = std::make_unique<detail::TlsFilter>(client_ctx, detail::TlsRole::client,
                                                  loopback_host(f), loopback_host(f));
    auto sf = std::make_unique<detail::TlsFilter>(server_ctx, detail::TlsRole::server);
    TlsEnds ends{cf.get(), sf.get()};
    detail::PipeImpl::of(*pair.client).filter_ = std::move(cf);
    detail::PipeImpl::of(*pair.accepted).filter_ = std::move(sf);
    return ends;
}

// Runs the handshake between two filters in memory, flight by flight; neither passes up any
// plaintext on the way.
void handshake_in_memory(detail::TlsFilter& client, detail::TlsFilter& server) {
    std::string to_server, to_client;
    const auto none = [](std::string_view p) { CHECK(p.empty()); };
    client.pending_output(to_server);
    for (int round = 0; round < 8 && !(to_server.empty() && to_client.empty()); ++round) {
        REQUIRE(!server.incoming(to_server, none));
        to_server.clear();
        server.pending_output(to_client);  // the server's flight, then its session tickets
        REQUIRE(!client.incoming(to_client, none));
        to_client.clear();
        client.pending_output(to_server);
    }
    REQUIRE(client.handshake_done());
    REQUIRE(server.handshake_done());
}

// Two filters with no pipe under them, for the tests that look at records themselves.
struct FilterPair {
    Ctx cc = pki().client_ctx();
    Ctx sc = pki().server_ctx();
    detail::TlsFilter client{cc.get(), detail::TlsRole::client, "127.0.0.1", "127.0.0.1"};
    detail::TlsFilter server{sc.get(), detail::TlsRole::server};
};

// Every TLS 1.3 record: a 5-byte header, then the plaintext, its type byte and a 16-byte tag.
constexpr std::size_t kRecordOverhead = 1 + 16;

// The length field of the record header at `off` in `wire` (5 header bytes precede the body).
std::size_t record_length(std::string_view wire, std::size_t off) {
    return (static_cast<std::size_t>(static_cast<unsigned char>(wire[off + 3])) << 8) |
           static_cast<unsigned char>(wire[off + 4]);
}

}  // namespace

namespace {
std::string seen_by_function;
void record_plaintext(std::string_view bytes) {
    seen_by_function.append(bytes);
}
}  // namespace

TEST_CASE("filter callbacks: a function, a lambda and a const function object all work") {
    detail::IdentityFilter f;
    seen_by_function.clear();
    CHECK(!f.incoming("one", record_plaintext));
    CHECK(!f.incoming("two", &record_plaintext));
    CHECK(seen_by_function == "onetwo");
    std::string seen;
    auto append = [&seen](std::string_view b) { seen.append(b); };
    CHECK(!f.incoming("three", append));
    struct Counter {
        std::size_t* n;
        void operator()(std::string_view b) const { *n += b.size(); }
    };
    std::size_t n = 0;
    const Counter count{&n};
    CHECK(!f.incoming("four", count));
    CHECK(seen == "three");
    CHECK(n == 4);
    auto doubled = [](int x) { return 2 * x; };
    const detail::FunctionRef<int(int)> twice = doubled;  // refers to doubled, which outlives it
    CHECK(twice(21) == 42);
}

TEST_CASE("TLS: a handshake, then hello both ways") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        TlsEnds tls = install_tls(pair, f, cc.get(), sc.get());
        auto at_server = collect(*pair.accepted);
        auto at_client = collect(*pair.client);
        REQUIRE(!pair.client->send("hello from the client"));
        REQUIRE(!pair.accepted->send("hello from the server"));
        run_until(
            loop, [&] { return at_server->data.size() >= 21 && at_client->data.size() >= 21; },
            "hello both ways");
        CHECK(at_server->data == "hello from the client");
        CHECK(at_client->data == "hello from the server");
        CHECK(tls.client->handshake_done());
        CHECK(tls.server->handshake_done());
        CHECK(!tls.client->peer_closed());

        // close_notify reaches the peer as the end of its TLS input. It leaves with the
        // client's next flush, which the server's message (still readable) brings about.
        tls.client->close_notify();
        REQUIRE(!pair.accepted->send("after close_notify"));
        run_until(
            loop, [&] { return tls.server->peer_closed(); }, "close_notify received");
        CHECK(at_client->data == "hello from the serverafter close_notify");
    }
}

TEST_CASE("TLS: 4 MiB from the client arrive whole, and the echo comes back") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        (void)install_tls(pair, f, cc.get(), sc.get());
        auto at_server = collect(*pair.accepted);
        pair.accepted->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
        auto at_client = collect(*pair.client);
        const std::string big = payload(4 * 1024 * 1024, 7);
        REQUIRE(!pair.client->send(big));
        run_until(
            loop,
            [&] {
                return at_server->data.size() >= big.size() && at_client->data.size() >= big.size();
            },
            "4 MiB there and back", std::chrono::milliseconds(20000));
        const std::hash<std::string> h;
        CHECK(at_server->data.size() == big.size());
        CHECK(h(at_server->data) == h(big));
        CHECK(at_client->data.size() == big.size());
        CHECK(h(at_client->data) == h(big));
    }
}

TEST_CASE("TLS: a client that does not trust the server's CA ends with the reason") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx(false);
        Ctx sc = pki().server_ctx();
        (void)install_tls(pair, f, cc.get(), sc.get());
        auto at_server = collect(*pair.accepted);
        auto client_end = watch_end(*pair.client);
        auto server_end = watch_end(*pair.accepted);
        REQUIRE(!pair.client->send("never readable by the server"));
        run_until(
            loop, [&] { return client_end->count == 1 && server_end->count == 1; },
            "both ends ended");
        const Error& e = client_end->info.error;
        CAPTURE(e.message);
        CHECK(client_end->info.reason == EndReason::error);
        CHECK(e == errc::tls_failed);
        CHECK(e.message.find("certificate verify failed") != std::string::npos);
        CHECK(e.message.find("unable to get local issuer certificate") != std::string::npos);
        CHECK(at_server->data.empty());
    }
}

TEST_CASE("TLS: a certificate for another address is refused") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        const std::string other = f == Family::ipv4 ? "192.0.2.1" : "2001:db8::1";
        detail::PipeImpl::of(*pair.client).filter_ =
            std::make_unique<detail::TlsFilter>(cc.get(), detail::TlsRole::client, "", other);
        detail::PipeImpl::of(*pair.accepted).filter_ =
            std::make_unique<detail::TlsFilter>(sc.get(), detail::TlsRole::server);
        auto client_end = watch_end(*pair.client);
        REQUIRE(!pair.client->send("hello"));
        run_until(
            loop, [&] { return client_end->count == 1; }, "the client ended");
        const Error& e = client_end->info.error;
        CAPTURE(e.message);
        CHECK(e == errc::tls_failed);
        CHECK(e.message.find("certificate verify failed") != std::string::npos);
        CHECK(e.message.find("IP address mismatch") != std::string::npos);
    }
}

TEST_CASE("TLS: a framed pipe exchanges 100 messages") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.framer = Framer::message();
        auto pair = tcp_pair(loop, f, conf, conf);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        (void)install_tls(pair, f, cc.get(), sc.get());
        pair.accepted->on_message(
            [](Pipe& p, const Message& m) { CHECK(!p.send("re: " + std::string(m.data))); });
        auto got = collect(*pair.client);
        for (int i = 0; i < 100; ++i) REQUIRE(!pair.client->send("m" + std::to_string(i)));
        run_until(
            loop, [&] { return got->msgs.size() == 100; }, "100 replies");
        REQUIRE(got->msgs.size() == 100);
        for (int i = 0; i < 100; ++i)
            CHECK(got->msgs[static_cast<std::size_t>(i)] == "re: m" + std::to_string(i));
    }
}

TEST_CASE("TLS: the first 16 KiB go in one-segment records, full 16 KiB records after") {
    // In memory, between two filters: the record sizes are what the filter itself makes.
    FilterPair pair;
    detail::TlsFilter& client = pair.client;
    detail::TlsFilter& server = pair.server;
    handshake_in_memory(client, server);
    std::string at_client;
    const auto keep = [&at_client](std::string_view p) { at_client.append(p); };

    const std::string data = payload(100'000, 5);
    std::string wire;
    REQUIRE(!server.outgoing(data, wire));
    std::vector<std::size_t> plain_sizes;
    std::size_t off = 0;
    while (off + 5 <= wire.size()) {
        const std::size_t len = record_length(wire, off);
        CHECK(static_cast<unsigned char>(wire[off]) == 23);  // application data
        plain_sizes.push_back(len - kRecordOverhead);
        off += 5 + len;
    }
    CHECK(off == wire.size());
    const std::size_t small = detail::TlsFilter::kSmallRecord;
    const std::size_t warm = (detail::TlsFilter::kSmallRecordBytes + small - 1) / small;
    REQUIRE(plain_sizes.size() > warm + 1);
    std::size_t total = 0;
    for (std::size_t i = 0; i < plain_sizes.size(); ++i) {
        CAPTURE(i);
        if (i < warm)
            CHECK(plain_sizes[i] == small);
        else if (i + 1 < plain_sizes.size())
            CHECK(plain_sizes[i] == 16 * 1024);
        total += plain_sizes[i];
    }
    CHECK(total == data.size());
    REQUIRE(!client.incoming(wire, keep));
    CHECK(at_client == data);
}

TEST_CASE("TLS: record buffers are given back between records, never in the middle of one") {
    FilterPair pair;
    detail::TlsFilter& client = pair.client;
    detail::TlsFilter& server = pair.server;
    server.release_buffers();  // during the handshake: kept
    CHECK(server.holds_buffers());
    handshake_in_memory(client, server);

    std::string wire, at_server, at_client;
    const auto to_server = [&at_server](std::string_view p) { at_server.append(p); };
    const auto to_client = [&at_client](std::string_view p) { at_client.append(p); };
    REQUIRE(!client.outgoing("a record cut in two", wire));
    // Half a record in: OpenSSL holds it in its read buffer, which must stay.
    REQUIRE(!server.incoming(std::string_view(wire).substr(0, 12), to_server));
    CHECK(at_server.empty());
    server.release_buffers();
    CHECK(server.holds_buffers());
    REQUIRE(!server.incoming(std::string_view(wire).substr(12), to_server));
    CHECK(at_server == "a record cut in two");
    server.release_buffers();
    client.release_buffers();
    CHECK(!server.holds_buffers());
    CHECK(!client.holds_buffers());

    // Given back, they come again with the next record, both ways.
    const std::string big = payload(100'000, 9);
    wire.clear();
    REQUIRE(!server.outgoing(big, wire));
    CHECK(server.holds_buffers());
    REQUIRE(!client.incoming(wire, to_client));
    CHECK(at_client == big);
    wire.clear();
    REQUIRE(!client.outgoing(big, wire));
    REQUIRE(!server.incoming(wire, to_server));
    CHECK(at_server == "a record cut in two" + big);
}

TEST_CASE("TLS: a read that ends anywhere among its records yields the same plaintext") {
    // incoming() stops asking OpenSSL once every byte is taken and nothing is buffered; each
    // cut below ends a read in a different place: inside a header, inside a record, between
    // records, with plaintext left over for a small buffer, and with close_notify behind data.
    const std::string data = payload(40'000, 3);          // small records, then a full one
    constexpr std::size_t kWhole = std::size_t{1} << 30;  // the whole stream in one read
    for (const std::size_t step : {std::size_t{1}, std::size_t{3}, std::size_t{1400},
                                   std::size_t{1422}, std::size_t{4096}, kWhole}) {
        for (const std::size_t block : {std::size_t{100}, std::size_t{64 * 1024}}) {
            CAPTURE(step);
            CAPTURE(block);
            FilterPair p;
            handshake_in_memory(p.client, p.server);
            std::string w;
            REQUIRE(!p.client.outgoing(data, w));
            REQUIRE(!p.client.outgoing("tail", w));
            p.client.close_notify();
            p.client.pending_output(w);
            std::string got, storage(block, '\0');
            std::size_t calls = 0;
            const auto buffer = [&storage] { return std::span<char>(storage); };
            const auto plain = [&](std::string_view b) {
                CHECK(b.size() <= block);
                got.append(b);
                ++calls;
            };
            for (std::size_t off = 0; off < w.size(); off += step) {
                REQUIRE(!p.server.incoming(std::string_view(w).substr(off, step), buffer, plain));
            }
            CHECK(got == data + "tail");
            CHECK(p.server.peer_closed());
            CHECK(!p.server.failed());
            CHECK(calls > 0);
        }
    }

    // Fed record by record into a buffer smaller than a record: each read passes on all of
    // its records, none of it is left waiting in OpenSSL for the next read.
    FilterPair p;
    handshake_in_memory(p.client, p.server);
    std::string w, got, storage(100, '\0');
    REQUIRE(!p.client.outgoing(data, w));
    const auto buffer = [&storage] { return std::span<char>(storage); };
    const auto plain = [&got](std::string_view b) { got.append(b); };
    std::size_t off = 0, expected = 0;
    while (off + 5 <= w.size()) {
        const std::size_t len = record_length(w, off);
        REQUIRE(!p.server.incoming(std::string_view(w).substr(off, 5 + len), buffer, plain));
        off += 5 + len;
        expected += len - kRecordOverhead;
        CAPTURE(off);
        REQUIRE(got.size() == expected);
    }
    CHECK(off == w.size());
    CHECK(got == data);
}

TEST_CASE("TLS: an error left in OpenSSL's queue is not this pipe's, and a failure leaves none") {
    FilterPair pair;
    detail::TlsFilter& client = pair.client;
    detail::TlsFilter& server = pair.server;
    handshake_in_memory(client, server);
    std::string wire, at_server;
    const auto to_server = [&at_server](std::string_view p) { at_server.append(p); };

    // Someone else's failure on this thread, never read: SSL_get_error would take it for the
    // next call's.
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
    REQUIRE(!client.outgoing("after a stranger's error", wire));
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
    REQUIRE(!server.incoming(wire, to_server));
    CHECK(at_server == "after a stranger's error");

    // A record that does not decrypt ends the filter with OpenSSL's reason, read and cleared.
    wire.clear();
    REQUIRE(!client.outgoing("tampered with", wire));
    wire[wire.size() - 1] = static_cast<char>(wire[wire.size() - 1] ^ 1);
    const Error e = server.incoming(wire, to_server);
    CHECK(e == errc::tls_failed);
    CHECK(e.message.find("TLS read failed: ") == 0);
    CHECK(e.message.size() > std::string("TLS read failed: ").size());
    CHECK(ERR_peek_error() == 0);
    CHECK(at_server == "after a stranger's error");
}

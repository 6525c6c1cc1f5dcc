// Fuzzes TlsFilter's wire input, what a peer controls. A real handshake runs in memory between a
// client and a server filter (each one's output fed to the other, no sockets); the fuzzer's
// bytes then reach one of them as wire input. Byte 0 picks the case:
//   bit 0: the filter fed is the client (else the server)
//   bit 1: after the handshake (else before it, on a filter that has seen nothing, or only
//          genuine bytes)
//   bit 2: TLS 1.2 (else 1.3)
//   bit 3: genuine bytes first. Before the handshake: the first byte-2/255 of the peer's first
//          flight (the ClientHello, or the server's reply to one); after it: records of the
//          plaintext that byte 2 (its length) and the bytes after it give, sent by the peer
//   bit 4: after the handshake with bit 3: the rest, 3 bytes at a time (a big-endian offset,
//          a byte to xor there), damages the peer's records instead of following them
// Byte 1 seeds the chunking: the wire bytes arrive in reads of 1 to 64 bytes, or all at once.
// The filter must accept or fail with errc::tls_failed, and keep failing with the same error;
// plaintext can come only from the peer's own records, in order; a filter that did not fail
// still sends what the peer reads. Any other outcome, a crash or a leak is a finding.
#include "../tests/tls_support.hpp"
#include "fuzz_decoder.hpp"
#include "transport/tls_filter.hpp"

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using namespace pipeworks;
using namespace pipeworks::fuzz;
using pipeworks::detail::TlsFilter;
using pipeworks::detail::TlsRole;

namespace {

// A CA, a server certificate it signed, and the contexts of both ends, made once: key
// generation costs more than a run.
struct Contexts {
    pw_test::Ctx server, client13, client12;
};

pw_test::Ctx client_ctx(X509* ca, int max_version) {
    pw_test::Ctx ctx(SSL_CTX_new(TLS_client_method()));
    pw_test::need(ctx != nullptr, "SSL_CTX_new");
    pw_test::need(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1, "min version");
    pw_test::need(SSL_CTX_set_max_proto_version(ctx.get(), max_version) == 1, "max version");
    pw_test::need(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca) == 1, "trust");
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    return ctx;
}

const Contexts& contexts() {
    static const Contexts c = [] {
        using namespace pw_test;
        Key ca_key = ec_key();
        Cert ca = make_cert(ca_key.get(), "fuzz CA", nullptr, nullptr, 1, true);
        Key key = ec_key();
        Cert cert = make_cert(key.get(), "localhost", ca.get(), ca_key.get(), 2, false);
        Contexts r;
        r.server.reset(SSL_CTX_new(TLS_server_method()));
        need(r.server != nullptr, "SSL_CTX_new");
        need(SSL_CTX_set_min_proto_version(r.server.get(), TLS1_2_VERSION) == 1, "min version");
        need(SSL_CTX_use_certificate(r.server.get(), cert.get()) == 1, "certificate");
        need(SSL_CTX_use_PrivateKey(r.server.get(), key.get()) == 1, "key");
        // Sessions are never resumed here: a cache would only grow with the runs.
        SSL_CTX_set_session_cache_mode(r.server.get(), SSL_SESS_CACHE_OFF);
        r.client13 = client_ctx(ca.get(), TLS1_3_VERSION);
        r.client12 = client_ctx(ca.get(), TLS1_2_VERSION);
        return r;
    }();
    return c;
}

void no_plaintext(std::string_view) {
    expect(false, "no plaintext during the handshake");
}

// Passes each side's output to the other until neither has more to say.
void pump(TlsFilter& client, TlsFilter& server) {
    std::string to_server, to_client;
    client.pending_output(to_server);
    for (int round = 0; round < 16 && !(to_server.empty() && to_client.empty()); ++round) {
        expect(!server.incoming(to_server, no_plaintext), "a genuine client is served");
        to_server.clear();
        server.pending_output(to_client);
        expect(!client.incoming(to_client, no_plaintext), "a genuine server is accepted");
        to_client.clear();
        client.pending_output(to_server);
    }
    expect(to_server.empty() && to_client.empty(), "the handshake ends in 16 rounds");
}

// Feeds `wire` in reads whose sizes come from `seed` (0: all at once), up to the first error.
Error feed(TlsFilter& f, std::string_view wire, std::uint8_t seed, std::string& plain) {
    const auto keep = [&plain](std::string_view p) { plain.append(p); };
    if (seed == 0) return f.incoming(wire, keep);
    std::uint32_t x = seed;
    std::string read_buffer;
    while (!wire.empty()) {
        x = x * 1103515245u + 12345u;
        const std::size_t n = std::min<std::size_t>(1 + (x >> 16) % 64, wire.size());
        read_buffer.assign(wire.substr(0, n));
        wire.remove_prefix(n);
        if (Error e = f.incoming(read_buffer, keep)) return e;
    }
    return {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const Contexts& ctx = contexts();
    Input in(data, size);
    const std::uint8_t mode = in.byte();
    const bool target_client = (mode & 1) != 0;
    const bool after = (mode & 2) != 0;
    const bool genuine = (mode & 8) != 0;
    const bool corrupt = after && genuine && (mode & 16) != 0;
    const std::uint8_t seed = in.byte();
    SSL_CTX* client_ctx = ((mode & 4) != 0 ? ctx.client12 : ctx.client13).get();

    TlsFilter client(client_ctx, TlsRole::client, "localhost", "localhost");
    TlsFilter server(ctx.server.get(), TlsRole::server);
    expect(!client.failed() && !server.failed(), "the filters start");
    TlsFilter& target = target_client ? client : server;
    TlsFilter& peer = target_client ? server : client;

    std::string wire;    // what reaches the target
    std::string sent;    // the plaintext of the peer's genuine records in `wire`
    bool whole = false;  // `wire` starts with the peer's whole first flight
    if (!after) {
        if (genuine) {
            std::string flight;
            client.pending_output(flight);
            if (target_client) {
                // The server's reply to the ClientHello.
                expect(!server.incoming(flight, no_plaintext), "a genuine client is served");
                flight.clear();
                server.pending_output(flight);
            }
            const std::size_t cut = flight.size() * in.byte() / 255;
            whole = cut == flight.size();
            wire = flight.substr(0, cut);
        }
        if (target_client) {
            // The client's ClientHello is out: the fuzzer's bytes answer it.
            std::string hello;
            client.pending_output(hello);
        }
    } else {
        pump(client, server);
        expect(client.handshake_done() && server.handshake_done(), "the handshake completes");
        if (genuine) {
            sent = std::string(in.take(in.byte()));
            expect(!peer.outgoing(sent, wire), "the peer sends");
        }
    }
    if (corrupt) {
        while (in.rest().size() >= 3 && !wire.empty()) {
            const std::size_t hi = in.byte();
            const std::size_t at = (hi << 8 | in.byte()) % wire.size();
            wire[at] = static_cast<char>(wire[at] ^ (in.byte() | 1));  // odd: never a no-op
        }
    } else {
        wire.append(in.rest());
    }

    const bool was_done = target.handshake_done();
    std::string got;
    const Error e = feed(target, wire, seed, got);
    if (!after) {
        // Without the peer's keys no handshake completes: only the peer's own flight, whole,
        // finishes one (the client's, on the server's reply).
        expect(!target.handshake_done() || (target_client && whole),
               "a handshake completes only with the peer's keys");
        expect(got.empty(), "no plaintext before a handshake");
    } else {
        expect(was_done && target.handshake_done(), "an established session stays established");
        // Records are authenticated: damaged ones yield nothing, and what came before them is
        // a prefix of what the peer sent; undamaged ones all arrive, before any garbage fails.
        expect(sent.compare(0, got.size(), got) == 0 && got.size() <= sent.size(),
               "plaintext is what the peer sent, in order");
        if (!corrupt) expect(got == sent, "every genuine record arrives");
    }

    (void)target.info();
    (void)target.buffered();
    std::string out;
    if (e) {
        expect(e == errc::tls_failed, "a bad record is errc::tls_failed");
        expect(!e.message.empty(), "a failure says why");
        expect(target.failed(), "a failed filter says so");
        std::string more;
        const Error again = target.incoming("more", no_plaintext);
        expect(again.code == e.code && again.message == e.message,
               "a failed filter repeats its error");
        const Error out_again = target.outgoing("more", more);
        expect(out_again.code == e.code && more.empty(), "a failed filter sends nothing");
        target.close_notify();
        target.pending_output(out);
        return 0;
    }
    expect(!target.failed(), "a filter that did not fail says so");
    if (!target.handshake_done()) return 0;
    // The session still works: the target's next record reaches the peer, as does its
    // close_notify.
    expect(!target.outgoing("still here", out), "an established filter sends");
    target.close_notify();
    target.pending_output(out);
    std::string back;
    const auto keep = [&back](std::string_view p) { back.append(p); };
    if (!peer.handshake_done()) return 0;  // the peer's flight was cut short
    const Error pe = peer.incoming(out, keep);
    expect(!pe, "the peer reads the target's records");
    expect(back == "still here", "the peer gets the target's plaintext");
    expect(peer.peer_closed(), "the peer gets the close_notify");
    return 0;
}

/* flowlake capture: exact TCP flow counters from a cgroup sock_ops program.
 *
 * Every kernel value read here is a field of struct bpf_sock_ops, which the
 * kernel rewrites to the running kernel's own layout when it loads the
 * program, or a packet's TCP header bytes: nothing is read from a kernel
 * struct through compile-time headers, so the counters stay correct when
 * BCC compiles against headers of another kernel version.
 *
 * Per connection: the ESTABLISHED callbacks record direction, start time and
 * the counters at establishment (the SYN offsets); the state callback at
 * TCP_CLOSE computes the payload counters (SYN and FIN excluded) and either
 *  - adds them to this generation's flow map (connection opened and closed
 *    within the generation: aggregated in the kernel, no event), or
 *  - emits one ring-buffer event (connection that outlived its generation,
 *    or was opened under an earlier sidecar): user space splits it.
 * Nothing runs per packet. The peer's FIN (which the kernel counts in
 * bytes_received) and our own (counted in bytes_acked once acknowledged) are
 * taken out using the state transitions: CLOSE_WAIT/CLOSING mean the peer's
 * FIN was consumed; FIN_WAIT1->FIN_WAIT2 means ours was acknowledged; from
 * FIN_WAIT2, CLOSE after rcv_nxt moved (and no RST, seen by the
 * tcp:tcp_receive_reset tracepoint, whose fields come from the running
 * kernel's tracefs format) means the peer's FIN was consumed.
 */
#include <uapi/linux/bpf.h>
#include "flow.h"

#define FL_AF_INET 2
/* A ctx load the compiler may neither sink into a branch nor merge. */
#define CTX_U32(ctx, field) (*(volatile __u32 *)&(ctx)->field)

BPF_HASH(conns, u64, struct conn_info, FLOWLAKE_MAX_CONNS);
BPF_HASH(flows0, struct flow_key, struct flow_agg, FLOWLAKE_MAX_FLOWS);
BPF_HASH(flows1, struct flow_key, struct flow_agg, FLOWLAKE_MAX_FLOWS);
BPF_ARRAY(ctl, u32, FLOWLAKE_CTL_SLOTS);
BPF_PERCPU_ARRAY(drops, u64, FLOWLAKE_DROP_SLOTS);
/* stats: 0 established seen, 1 closes aggregated in kernel, 2 close events */
BPF_PERCPU_ARRAY(stats, u64, 4);
BPF_RINGBUF_OUTPUT(events, FLOWLAKE_RINGBUF_PAGES);

static __always_inline void bump(int which, int slot)
{
    u64 *v = which ? stats.lookup(&slot) : drops.lookup(&slot);
    if (v)
        (*v)++;
}

static __always_inline u32 current_gen(void)
{
    int slot = FLOWLAKE_CTL_GEN;
    u32 *g = ctl.lookup(&slot);
    return g ? *g : 0;
}

static __always_inline void read_addrs(struct bpf_sock_ops *skops, u8 *local, u8 *remote)
{
    /* Every field is read unconditionally: a conditional read lets the
     * compiler share one load over two ctx offsets, which the verifier
     * (rightly) refuses. */
    u32 family = CTX_U32(skops, family);
    u32 l4 = CTX_U32(skops, local_ip4), r4 = CTX_U32(skops, remote_ip4);
    u32 l[4], r[4];
    l[0] = CTX_U32(skops, local_ip6[0]);
    l[1] = CTX_U32(skops, local_ip6[1]);
    l[2] = CTX_U32(skops, local_ip6[2]);
    l[3] = CTX_U32(skops, local_ip6[3]);
    r[0] = CTX_U32(skops, remote_ip6[0]);
    r[1] = CTX_U32(skops, remote_ip6[1]);
    r[2] = CTX_U32(skops, remote_ip6[2]);
    r[3] = CTX_U32(skops, remote_ip6[3]);
    if (family == FL_AF_INET) {
        l[0] = 0; l[1] = 0; l[2] = bpf_htonl(0xffff); l[3] = l4;
        r[0] = 0; r[1] = 0; r[2] = bpf_htonl(0xffff); r[3] = r4;
    }
    __builtin_memcpy(local, l, 16);
    __builtin_memcpy(remote, r, 16);
}

static __always_inline void on_established(struct bpf_sock_ops *skops, u8 direction)
{
    u64 cookie = bpf_get_socket_cookie(skops);
    struct conn_info ci = {};
    ci.start_ns = bpf_ktime_get_ns();
    ci.gen = current_gen();
    ci.direction = direction;
    ci.base_bytes_acked = skops->bytes_acked;
    ci.base_bytes_received = skops->bytes_received;
    ci.base_segs_sent = skops->data_segs_out;
    ci.base_segs_received = skops->data_segs_in;
    if (conns.update(&cookie, &ci) != 0)
        bump(0, FLOWLAKE_DROP_CONN_MAP_FULL);
    bump(1, 0);
    /* Even without a map entry the close is reported (as adopted). */
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* A RST closes the connection without a FIN: remember it for on_close. */
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    u64 cookie = args->sock_cookie;
    struct conn_info *ci = conns.lookup(&cookie);
    if (ci)
        ci->flags |= FLOWLAKE_F_RESET;
    return 0;
}

static __always_inline u64 sub_clamp(u64 a, u64 b)
{
    return a > b ? a - b : 0;
}

static __always_inline void on_close(struct bpf_sock_ops *skops, u64 cookie,
                                     struct conn_info *ci, u32 old_state)
{
    u32 gen = current_gen();
    u8 flags = ci ? ci->flags : FLOWLAKE_F_ADOPTED;
    if ((old_state == BPF_TCP_CLOSING || old_state == BPF_TCP_LAST_ACK) &&
        skops->snd_una == skops->snd_nxt)
        flags |= FLOWLAKE_F_FIN_ACKED;
    if (ci && old_state == BPF_TCP_FIN_WAIT2 && (flags & FLOWLAKE_F_FIN_WAIT2) &&
        !(flags & FLOWLAKE_F_RESET) && skops->rcv_nxt != ci->rcv_nxt_fin_wait2)
        flags |= FLOWLAKE_F_FIN_RCVD;

    u64 bytes_acked = skops->bytes_acked;
    u64 bytes_received = skops->bytes_received;
    u32 segs_sent = skops->data_segs_out;
    u32 segs_received = skops->data_segs_in;
    u32 retrans = skops->total_retrans;
    u32 srtt_us = skops->srtt_us >> 3;

    if (ci && !(flags & FLOWLAKE_F_ADOPTED) && ci->gen == gen) {
        struct flow_key key = {};
        key.gen = gen;
        key.direction = ci->direction;
        read_addrs(skops, key.local_ip, key.remote_ip);
        if (ci->direction == FLOWLAKE_DIR_OUTBOUND)
            key.remote_port = (u16)bpf_ntohl(skops->remote_port);
        else
            key.local_port = (u16)skops->local_port;
        struct flow_agg zero = {};
        struct flow_agg *agg;
        if (gen & 1) {
            agg = flows1.lookup(&key);
            if (!agg) {
                flows1.insert(&key, &zero);
                agg = flows1.lookup(&key);
            }
        } else {
            agg = flows0.lookup(&key);
            if (!agg) {
                flows0.insert(&key, &zero);
                agg = flows0.lookup(&key);
            }
        }
        if (agg) {
            u64 sent = sub_clamp(bytes_acked, ci->base_bytes_acked + ((flags & FLOWLAKE_F_FIN_ACKED) ? 1 : 0));
            u64 rcvd = sub_clamp(bytes_received, ci->base_bytes_received + ((flags & FLOWLAKE_F_FIN_RCVD) ? 1 : 0));
            __sync_fetch_and_add(&agg->conns_opened, 1);
            __sync_fetch_and_add(&agg->conns_closed, 1);
            __sync_fetch_and_add(&agg->bytes_sent, sent);
            __sync_fetch_and_add(&agg->bytes_received, rcvd);
            __sync_fetch_and_add(&agg->segs_sent, sub_clamp(segs_sent, ci->base_segs_sent));
            __sync_fetch_and_add(&agg->segs_received, sub_clamp(segs_received, ci->base_segs_received));
            __sync_fetch_and_add(&agg->retransmits, retrans);
            /* min/max under concurrent closes of one key may miss an update */
            if (agg->first_start_ns == 0 || ci->start_ns < agg->first_start_ns)
                agg->first_start_ns = ci->start_ns;
            if (srtt_us > agg->srtt_us_max)
                agg->srtt_us_max = srtt_us;
            bump(1, 1);
            return;
        }
        bump(0, FLOWLAKE_DROP_FLOW_MAP_FULL); /* falls back to an event */
    }

    struct flow_event ev = {};
    ev.cookie = cookie;
    ev.start_ns = ci ? ci->start_ns : 0;
    ev.close_ns = bpf_ktime_get_ns();
    ev.bytes_acked = bytes_acked;
    ev.bytes_received = bytes_received;
    ev.segs_sent = segs_sent;
    ev.segs_received = segs_received;
    ev.retransmits = retrans;
    ev.srtt_us = srtt_us;
    ev.gen_start = ci ? ci->gen : gen;
    ev.gen_close = gen;
    ev.direction = ci ? ci->direction : 0;
    ev.flags = flags;
    if (ci && !(flags & FLOWLAKE_F_ADOPTED)) {
        ev.base_bytes_acked = ci->base_bytes_acked;
        ev.base_bytes_received = ci->base_bytes_received;
        ev.base_segs_sent = ci->base_segs_sent;
        ev.base_segs_received = ci->base_segs_received;
    }
    ev.local_port = (u16)skops->local_port;
    ev.remote_port = (u16)bpf_ntohl(skops->remote_port);
    read_addrs(skops, ev.local_ip, ev.remote_ip);
    if (events.ringbuf_output(&ev, sizeof(ev), 0) != 0)
        bump(0, FLOWLAKE_DROP_RINGBUF_FULL);
    else
        bump(1, 2);
}

static __always_inline void on_state_change(struct bpf_sock_ops *skops)
{
    u32 old_state = skops->args[0];
    u32 new_state = skops->args[1];
    u64 cookie = bpf_get_socket_cookie(skops);
    struct conn_info *ci = conns.lookup(&cookie);

    if (!ci && new_state != BPF_TCP_CLOSE) {
        /* flag set by an earlier sidecar (or our map was full): adopt it */
        struct conn_info fresh = {};
        fresh.flags = FLOWLAKE_F_ADOPTED;
        conns.update(&cookie, &fresh);
        ci = conns.lookup(&cookie);
    }
    if (ci) {
        if (new_state == BPF_TCP_CLOSE_WAIT || new_state == BPF_TCP_CLOSING)
            ci->flags |= FLOWLAKE_F_FIN_RCVD;
        if (old_state == BPF_TCP_FIN_WAIT1 && new_state == BPF_TCP_FIN_WAIT2) {
            ci->flags |= FLOWLAKE_F_FIN_ACKED | FLOWLAKE_F_FIN_WAIT2;
            ci->rcv_nxt_fin_wait2 = skops->rcv_nxt;
        }
    }
    if (new_state == BPF_TCP_CLOSE) {
        on_close(skops, cookie, ci, old_state);
        if (ci)
            conns.delete(&cookie);
    }
}

int flowlake_sockops(struct bpf_sock_ops *skops)
{
    switch (skops->op) {
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
        on_established(skops, FLOWLAKE_DIR_OUTBOUND);
        break;
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
        on_established(skops, FLOWLAKE_DIR_INBOUND);
        break;
    case BPF_SOCK_OPS_STATE_CB:
        on_state_change(skops);
        break;
    }
    return 1;
}

/* Shared definitions of flowlake's capture eBPF program (flow.bpf.c) and its
 * user-space decoder (capture/decode.py mirrors these layouts with ctypes).
 *
 * Field names carry their unit: *_ns nanoseconds (CLOCK_MONOTONIC, from
 * bpf_ktime_get_ns), *_us microseconds, bytes_* bytes, segs_* segments.
 * Addresses are 16 bytes in network order; IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d) so one key type covers both families.
 *
 * Sizes come from the compiler command line (-D...), never from string
 * replacement: FLOWLAKE_MAX_CONNS, FLOWLAKE_MAX_FLOWS, FLOWLAKE_RINGBUF_PAGES.
 */
#ifndef FLOWLAKE_FLOW_H
#define FLOWLAKE_FLOW_H

#ifndef FLOWLAKE_MAX_CONNS
#define FLOWLAKE_MAX_CONNS 65536
#endif
#ifndef FLOWLAKE_MAX_FLOWS
#define FLOWLAKE_MAX_FLOWS 16384
#endif
#ifndef FLOWLAKE_RINGBUF_PAGES
#define FLOWLAKE_RINGBUF_PAGES 64
#endif

#define FLOWLAKE_DIR_OUTBOUND 1 /* local side connected */
#define FLOWLAKE_DIR_INBOUND 2  /* local side accepted */

/* conn_info.flags and flow_event.flags */
#define FLOWLAKE_F_FIN_RCVD 1  /* peer's FIN consumed (bytes_received counts it) */
#define FLOWLAKE_F_FIN_ACKED 2 /* our FIN acknowledged (bytes_acked counts it) */
#define FLOWLAKE_F_FIN_WAIT2 4 /* entered FIN_WAIT2: rcv_nxt_fin_wait2 is set */
#define FLOWLAKE_F_ADOPTED 8   /* first seen at a state change, not at establishment */
#define FLOWLAKE_F_RESET 16    /* a RST was received (tcp:tcp_receive_reset) */

/* drops[] indexes: what the kernel side could not record */
#define FLOWLAKE_DROP_CONN_MAP_FULL 0
#define FLOWLAKE_DROP_FLOW_MAP_FULL 1
#define FLOWLAKE_DROP_RINGBUF_FULL 2
#define FLOWLAKE_DROP_SLOTS 4

/* ctl[] indexes: values user space writes */
#define FLOWLAKE_CTL_GEN 0 /* current aggregation generation (interval number) */
#define FLOWLAKE_CTL_SLOTS 2

/* One aggregation key: contracts §1 (ephemeral client port already folded to 0). */
struct flow_key {
    __u32 gen;        /* generation (interval) the counters belong to */
    __u8 direction;   /* FLOWLAKE_DIR_* */
    __u8 pad0;
    __u16 local_port; /* host order; 0 for outbound */
    __u16 remote_port;/* host order; 0 for inbound */
    __u16 pad1;
    __u8 local_ip[16];
    __u8 remote_ip[16];
};

/* Counters of connections opened and closed within one generation. */
struct flow_agg {
    __u64 first_start_ns;
    __u64 conns_opened;
    __u64 conns_closed;
    __u64 bytes_sent;     /* payload acknowledged by the peer, no SYN/FIN */
    __u64 bytes_received; /* payload received, no SYN/FIN */
    __u64 segs_sent;      /* segments carrying payload (data_segs_out) */
    __u64 segs_received;  /* segments carrying payload (data_segs_in) */
    __u64 retransmits;    /* total_retrans */
    __u64 srtt_us_max;
};

/* Per open connection, keyed by socket cookie (same as sock_diag's cookie). */
struct conn_info {
    __u64 start_ns;
    __u32 gen;            /* generation at establishment */
    __u8 direction;
    __u8 flags;           /* FLOWLAKE_F_* */
    __u16 pad;
    __u32 rcv_nxt_fin_wait2; /* rcv_nxt when FIN_WAIT2 was entered */
    __u32 pad2;
    __u64 base_bytes_acked;     /* counters at establishment (SYN offsets) */
    __u64 base_bytes_received;
    __u32 base_segs_sent;
    __u32 base_segs_received;
};

/* Emitted once, at close, for a connection that outlived its generation (or
 * was adopted): user space splits it over intervals. Absolute counters. */
struct flow_event {
    __u64 cookie;
    __u64 start_ns;
    __u64 close_ns;
    __u64 bytes_acked;
    __u64 bytes_received;
    __u64 base_bytes_acked;
    __u64 base_bytes_received;
    __u32 segs_sent;
    __u32 segs_received;
    __u32 base_segs_sent;
    __u32 base_segs_received;
    __u32 retransmits;
    __u32 srtt_us;
    __u32 gen_start;
    __u32 gen_close;
    __u8 direction;
    __u8 flags;
    __u16 pad;
    __u16 local_port;   /* host order, not folded */
    __u16 remote_port;  /* host order, not folded */
    __u8 local_ip[16];
    __u8 remote_ip[16];
};

#endif

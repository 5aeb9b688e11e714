"""gold/app_dependencies counts each connection once, from the side that saw it best."""

from flowlake.jobs.gold import dependencies
from flowlake.contracts import RAW_FLOW_DDL
from tests.jobs.helpers import T0, flow


ATTRIBUTED_DDL = (RAW_FLOW_DDL + ", local_workload_resolved string, remote_workload string, "
                  "remote_attribution string, remote_availability_zone string")


def _attributed(spark, rows):
    cols = [c.split()[0] for c in RAW_FLOW_DDL.split(", ")]
    return spark.createDataFrame([tuple(r[0][c] for c in cols) + tuple(r[1:]) for r in rows], ATTRIBUTED_DDL)


def test_sidecar_to_sidecar_connection_counted_once_from_the_client(spark):
    rows = [
        (flow(bytes_sent=100, bytes_received=900, connections_opened=3), "web", "api", "heartbeat", "us-east-1b"),
        (flow(instance_id="i-b", local_ip="10.0.0.2", local_port=443, remote_ip="10.0.0.1", remote_port=0,
              direction="inbound", bytes_sent=900, bytes_received=100, connections_opened=3),
         "api", "web", "heartbeat", "us-east-1a"),
        # a client without sidecar: only the server saw it
        (flow(instance_id="i-b", local_ip="10.0.0.2", local_port=443, remote_ip="10.0.0.77", remote_port=0,
              direction="inbound", bytes_sent=50, bytes_received=5, connections_opened=1),
         "api", "batch", "event", "us-east-1c"),
    ]
    edges = {(r.src_workload, r.dst_workload): r for r in dependencies.transform(_attributed(spark, rows)).collect()}
    assert set(edges) == {("web", "api"), ("batch", "api")}
    web = edges[("web", "api")]
    assert (web.connections, web.bytes_to_dst, web.bytes_to_src, web.dst_port, web.observed_by) == (3, 100, 900, 443, "client")
    batch = edges[("batch", "api")]
    assert (batch.connections, batch.bytes_to_dst, batch.bytes_to_src, batch.observed_by) == (1, 5, 50, "server")
    assert web.hour_start_ms == T0

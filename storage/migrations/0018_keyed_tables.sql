-- FleetTUI schema version 18: processes and links as dimensions (issue 13, store size).
-- A process's cgroup path, container and host strings were stored again in every
-- listing (every few seconds): most of the `processes` table's bytes. Each process
-- is now one `process_info` row, and a listing row keeps only its time, the
-- process's integer id and the memory it held. `processes` becomes a view with the
-- old columns and types, so queries, the drill-down and exports read it unchanged;
-- writers still hand `processes` batches to the store (storage/keyed.py).

CREATE TABLE process_info (
    process_id    BIGINT PRIMARY KEY,   -- 1, 2, ... in order of first listing
    host          VARCHAR NOT NULL,
    gpu_uuid      VARCHAR NOT NULL,
    slice_id      VARCHAR,
    pid           BIGINT NOT NULL,
    container     VARCHAR,
    cgroup        VARCHAR,
    tenant_guess  VARCHAR,
    source        VARCHAR
);

CREATE TABLE process_listings (
    ts              TIMESTAMP NOT NULL,
    process_id      BIGINT NOT NULL,     -- process_info.process_id
    used_mem_bytes  BIGINT
);

-- the rows a store already holds: one identity per distinct process, ids by first listing
INSERT INTO process_info
SELECT row_number() OVER (ORDER BY first_ts, host, gpu_uuid, slice_id, pid, container, cgroup,
                                   tenant_guess, source),
       host, gpu_uuid, slice_id, pid, container, cgroup, tenant_guess, source
FROM (SELECT host, gpu_uuid, slice_id, pid, container, cgroup, tenant_guess, source,
             min(ts) AS first_ts
      FROM processes GROUP BY ALL);

INSERT INTO process_listings
SELECT p.ts, i.process_id, p.used_mem_bytes
FROM processes p JOIN process_info i
  ON i.host = p.host AND i.gpu_uuid = p.gpu_uuid AND i.pid = p.pid
 AND i.slice_id IS NOT DISTINCT FROM p.slice_id
 AND i.container IS NOT DISTINCT FROM p.container
 AND i.cgroup IS NOT DISTINCT FROM p.cgroup
 AND i.tenant_guess IS NOT DISTINCT FROM p.tenant_guess
 AND i.source IS NOT DISTINCT FROM p.source
ORDER BY p.ts, i.process_id;

DROP TABLE processes;

CREATE VIEW processes AS
SELECT l.ts, i.host, i.gpu_uuid, i.slice_id, i.pid, l.used_mem_bytes, i.container, i.cgroup,
       i.tenant_guess, i.source
FROM process_listings l JOIN process_info i ON i.process_id = l.process_id;

-- Links the same way: a port's host, kind, port name, GPU and source once in
-- `link_info`, each sample (ts, link_id, values) in `link_values`. At 10,000 GPUs
-- the UUID strings no longer fit a dictionary per segment and cost more than the
-- values (benchmarks/README.md, "Store size"). `link_samples` becomes a view
-- with the old columns and types; the rollups (0012, 0015) read it as before.

CREATE TABLE link_info (
    link_id   BIGINT PRIMARY KEY,   -- 1, 2, ... in order of first sample
    kind      VARCHAR NOT NULL CHECK (kind IN ('nvlink', 'ib', 'efa', 'roce', 'iwarp')),
    host      VARCHAR NOT NULL,
    port      VARCHAR NOT NULL,
    gpu_uuid  VARCHAR,
    source    VARCHAR
);

CREATE TABLE link_values (
    ts                     TIMESTAMP NOT NULL,
    link_id                BIGINT NOT NULL,   -- link_info.link_id
    tx_bytes_per_s         DOUBLE,
    rx_bytes_per_s         DOUBLE,
    line_rate_bytes_per_s  DOUBLE,
    errors                 BIGINT,
    link_up                BOOLEAN
);

INSERT INTO link_info
SELECT row_number() OVER (ORDER BY first_ts, kind, host, port, gpu_uuid, source),
       kind, host, port, gpu_uuid, source
FROM (SELECT kind, host, port, gpu_uuid, source, min(ts) AS first_ts
      FROM link_samples GROUP BY ALL);

INSERT INTO link_values
SELECT l.ts, i.link_id, l.tx_bytes_per_s, l.rx_bytes_per_s, l.line_rate_bytes_per_s, l.errors,
       l.link_up
FROM link_samples l JOIN link_info i
  ON i.kind = l.kind AND i.host = l.host AND i.port = l.port
 AND i.gpu_uuid IS NOT DISTINCT FROM l.gpu_uuid
 AND i.source IS NOT DISTINCT FROM l.source
ORDER BY l.ts, i.link_id;

DROP TABLE link_samples;

CREATE VIEW link_samples AS
SELECT v.ts, i.host, i.kind, i.port, i.gpu_uuid, v.tx_bytes_per_s, v.rx_bytes_per_s,
       v.line_rate_bytes_per_s, v.errors, v.link_up, i.source
FROM link_values v JOIN link_info i ON i.link_id = v.link_id;

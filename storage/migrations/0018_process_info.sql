-- FleetTUI schema version 18: processes as a dimension (issue 13, store size).
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

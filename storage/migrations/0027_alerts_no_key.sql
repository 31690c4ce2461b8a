-- FleetTUI schema version 27: `alerts` without its PRIMARY KEY (issue 13, the first
-- alert cycle at 100,000 GPUs). The key's ART index was built twice for every new alert
-- (when the rows reached the transaction, and again at COMMIT): the first cycle after a
-- start inserts ~20,000 rows, and the index was ~40 % of that insert's CPU. The writer
-- keeps one row per alert id without it (storage/store.py, `_insert_new_alerts`): an
-- alert id embeds the second its alert started (`rule|scope_key|started`), so an id
-- the table holds already lies in a row started in that second, and a batch of new ids
-- is checked against the rows started in or after its earliest second only (the table
-- is in start order: DuckDB's zone maps skip the rest). An id found there is merged, as
-- the key's refusal made it before. Known alerts were always merged on the key.
-- DuckDB cannot drop a constraint: the table is copied without it, in start order, its
-- id NOT NULL as the key made it.

CREATE TABLE alerts_0027 (
    alert_id        VARCHAR NOT NULL,      -- rule|scope_key|started (ISO seconds)
    rule            VARCHAR NOT NULL,
    scope           VARCHAR NOT NULL,
    scope_key       VARCHAR NOT NULL,
    severity        VARCHAR NOT NULL,
    state           VARCHAR NOT NULL CHECK (state IN ('pending', 'firing', 'resolved', 'inactive')),
    started_at      TIMESTAMP NOT NULL,    -- condition first held (became pending)
    fired_at        TIMESTAMP,             -- held for the rule's `for` (became firing)
    resolved_at     TIMESTAMP,             -- ended: resolved, or back to inactive before firing
    last_active_at  TIMESTAMP NOT NULL,    -- last evaluation at which the condition held
    evaluated_at    TIMESTAMP NOT NULL,    -- last evaluation that looked at this instance
    peak_value      DOUBLE,                -- most extreme value while active (max for > and >=)
    last_value      DOUBLE,
    threshold       DOUBLE,
    labels          VARCHAR,
    annotations     VARCHAR
);
INSERT INTO alerts_0027 SELECT alert_id, rule, scope, scope_key, severity, state, started_at, fired_at, resolved_at, last_active_at, evaluated_at, peak_value, last_value, threshold, labels, annotations FROM alerts ORDER BY started_at, alert_id;
DROP TABLE alerts;
ALTER TABLE alerts_0027 RENAME TO alerts;

-- Alert engine (issue 6): one row per alert instance, updated as it moves
-- pending -> firing -> resolved; silences and acknowledgements from the app.
-- labels / annotations are JSON objects as text (query with json_extract_string).

CREATE TABLE alerts (
    alert_id        VARCHAR PRIMARY KEY,   -- rule|scope_key|started epoch seconds
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

CREATE TABLE silences (
    silence_id  VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL CHECK (kind IN ('silence', 'ack')),
    rule        VARCHAR,                   -- NULL: any rule
    scope_key   VARCHAR,                   -- NULL: any scope key
    alert_id    VARCHAR,                   -- an acknowledgement names one alert instance
    created_by  VARCHAR NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    starts_at   TIMESTAMP NOT NULL,
    ends_at     TIMESTAMP NOT NULL,
    comment     VARCHAR
);

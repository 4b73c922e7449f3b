-- schema.sql: the TinyMLPerf database, version 1.
-- Applied by tinymlperfd at start-up when PRAGMA user_version is 0; later versions append
-- migrations in server/db.c and bump user_version, so an existing database is upgraded in place.

CREATE TABLE teams (
	id          INTEGER PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
	token_hash  BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),  -- SHA-256 of the token
	is_admin    INTEGER NOT NULL DEFAULT 0,
	created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE submissions (
	id           INTEGER PRIMARY KEY,
	team_id      INTEGER NOT NULL REFERENCES teams(id),
	event        TEXT NOT NULL,                       -- mlp_sprint | cnn_marathon | transformer_decathlon
	division     TEXT NOT NULL CHECK (division IN ('closed', 'open')),
	name         TEXT NOT NULL DEFAULT '',
	config       TEXT NOT NULL,                       -- the config JSON as submitted
	config_sha256 TEXT NOT NULL,
	status       TEXT NOT NULL DEFAULT 'queued'
	             CHECK (status IN ('queued', 'running', 'finished', 'failed', 'cancelled')),
	error        TEXT,
	attempts     INTEGER NOT NULL DEFAULT 0,
	worker_slot  INTEGER,
	created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
	started_at   TEXT,
	finished_at  TEXT
);
CREATE INDEX submissions_queue ON submissions(status, team_id, id);
CREATE INDEX submissions_team_day ON submissions(team_id, created_at);

-- Progress lines from the worker, kept for late subscribers of the event stream.
CREATE TABLE progress (
	submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
	seq           INTEGER NOT NULL,
	line          TEXT NOT NULL,
	PRIMARY KEY (submission_id, seq)
) WITHOUT ROWID;

-- One row per finished submission: the columns the leaderboard sorts on, plus the result JSON.
CREATE TABLE results (
	submission_id    INTEGER PRIMARY KEY REFERENCES submissions(id) ON DELETE CASCADE,
	event            TEXT NOT NULL,
	division         TEXT NOT NULL,
	valid            INTEGER NOT NULL,
	gate_passed      INTEGER NOT NULL,
	speedup          REAL,
	speedup_ci_low   REAL,
	speedup_ci_high  REAL,
	quality          REAL,
	latency_p90_ns   REAL,
	throughput       REAL,
	model_bytes      INTEGER,
	compression      REAL,
	result           TEXT NOT NULL                    -- the worker's result JSON, validated
);
CREATE INDEX results_rank ON results(event, division, valid, gate_passed, speedup DESC);

-- Raw per-query (or per-pass) timings for histograms.
CREATE TABLE timings (
	submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
	series        TEXT NOT NULL CHECK (series IN ('submission', 'baseline')),
	seq           INTEGER NOT NULL,
	ns            INTEGER NOT NULL,
	PRIMARY KEY (submission_id, series, seq)
) WITHOUT ROWID;

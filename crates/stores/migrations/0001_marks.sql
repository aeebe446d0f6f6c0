-- One row per student, class and local day: the system of record of marks.
-- `row_text` is the mark's CSV row without its hash, byte for byte as the CSV journal holds
-- it, so `attendanced export` rebuilds the same file with the same chain.
CREATE TABLE attendance_marks (
    id               bigserial   PRIMARY KEY,
    course           text        NOT NULL,
    division         text        NOT NULL,
    day              date        NOT NULL,
    roll             text        NOT NULL,
    name             text        NOT NULL,
    status           text        NOT NULL,
    marked_at        timestamptz NOT NULL,
    marked_at_text   text        NOT NULL,
    minutes_late     integer     NOT NULL,
    minutes_attended integer     NOT NULL,
    client_addr      text,
    row_text         text        NOT NULL,
    node             text        NOT NULL,
    UNIQUE (course, division, day, roll)
);
CREATE INDEX attendance_marks_day ON attendance_marks (day, id);

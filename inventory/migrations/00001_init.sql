-- Schema of the order pipeline. Correctness rests on these constraints, not
-- on the Redis lock: stock never goes below zero, a buyer never holds more
-- than max_units of a limited product, an order id is decided once.

-- +goose Up
CREATE TABLE products (
    id                    text        PRIMARY KEY,
    name                  text        NOT NULL,
    -- units left to sell
    stock                 bigint      NOT NULL CHECK (stock >= 0),
    -- units in succeeded orders: stock + sold is everything ever stocked
    sold                  bigint      NOT NULL DEFAULT 0 CHECK (sold >= 0),
    per_user_limit        integer     NOT NULL DEFAULT 0 CHECK (per_user_limit >= 0),
    -- highest lock fencing token that has written this row; a writer with
    -- a smaller token changes nothing (compare-and-advance in the UPDATE)
    fence                 bigint      NOT NULL DEFAULT 0,
    -- generation of the last restock, for the sold-out gate in Redis
    restock_gen           bigint      NOT NULL DEFAULT 0,
    -- order counts by outcome, kept in the same transaction as the orders
    orders_succeeded      bigint      NOT NULL DEFAULT 0,
    orders_sold_out       bigint      NOT NULL DEFAULT 0,
    orders_limit_exceeded bigint      NOT NULL DEFAULT 0,
    orders_failed         bigint      NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- One row per decided order: a row exists only once the outcome is final.
-- Orders that are still queued live in the queue (see README, "Where an
-- order lives").
CREATE TABLE orders (
    id              text        PRIMARY KEY,
    product_id      text        NOT NULL REFERENCES products (id),
    user_id         text        NOT NULL,
    quantity        integer     NOT NULL CHECK (quantity > 0),
    idempotency_key text,
    status          text        NOT NULL CHECK (status IN ('succeeded', 'sold_out', 'limit_exceeded', 'failed')),
    reason          text        NOT NULL DEFAULT '',
    -- fencing token of the lock under which the outcome was decided
    fence           bigint      NOT NULL DEFAULT 0,
    -- when the API accepted the order
    created_at      timestamptz NOT NULL,
    -- when the outcome was committed
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX orders_user_idempotency_key
    ON orders (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Units bought per buyer of a product with a per-user limit. The CHECK makes
-- the database itself refuse a purchase above the limit.
CREATE TABLE purchases (
    product_id text    NOT NULL REFERENCES products (id),
    user_id    text    NOT NULL,
    units      integer NOT NULL CHECK (units > 0),
    max_units  integer NOT NULL CHECK (max_units > 0),
    PRIMARY KEY (product_id, user_id),
    CHECK (units <= max_units)
);

-- +goose Down
DROP TABLE purchases;
DROP TABLE orders;
DROP TABLE products;

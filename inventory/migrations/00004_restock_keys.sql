-- Restocks sent with an Idempotency-Key: a restock sent again with the same
-- key (a retry after a lost answer or a 503) adds nothing the second time.
-- The key is written in the transaction that adds the stock, so it exists
-- exactly when the stock was added.

-- +goose Up
CREATE TABLE restocks (
    product_id text        NOT NULL REFERENCES products (id),
    key        text        NOT NULL,
    quantity   bigint      NOT NULL CHECK (quantity > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, key)
);

-- +goose Down
DROP TABLE restocks;

-- The orders -> products foreign key cost a third of a batch transaction:
-- PostgreSQL checks it row by row (BenchmarkApply, 64 orders on one
-- product: 1.75ms with it, 1.14ms without). It protected nothing the
-- transaction does not already guarantee: Store.Apply reads and locks every
-- product of a batch FOR UPDATE before inserting its orders and records no
-- order for a product it did not find, RecordFailed inserts only WHERE
-- EXISTS the product, and products are never deleted.

-- +goose Up
ALTER TABLE orders DROP CONSTRAINT orders_product_id_fkey;

-- +goose Down
ALTER TABLE orders ADD CONSTRAINT orders_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (id);

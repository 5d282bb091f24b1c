-- flashsale_assert lets one statement refuse its own result: Store.Apply
-- sends its writes and COMMIT in one round trip, so a check it used to make
-- in Go between the writes and COMMIT (every order inserted, every stock
-- update matched) now raises inside the statement, which aborts the
-- transaction and makes PostgreSQL skip the COMMIT queued after it.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION flashsale_assert(ok boolean, code text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	IF ok IS NOT TRUE THEN
		RAISE EXCEPTION USING ERRCODE = 'FS001', MESSAGE = code;
	END IF;
	RETURN true;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION flashsale_assert(boolean, text);

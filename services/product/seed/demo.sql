-- The demo catalog: 32 products in 7 categories, with stock. Idempotent: products are
-- matched by sku, so running it again changes nothing. Applied by `cargo xtask up` to an
-- empty catalog and by `cargo xtask seed` on demand, after the service has migrated.
BEGIN;

-- A UUIDv7 (time-ordered) like the service's own ids: a random v4 with its first 48 bits
-- replaced by the Unix time in milliseconds and the version nibble set to 7.
CREATE FUNCTION pg_temp.uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
            PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
            FROM 1 FOR 6), 52, 1), 53, 1),
        'hex')::uuid
$$;

CREATE TEMPORARY TABLE demo (
    sku text, name text, description text, price_amount bigint, currency text,
    categories text[], image_url text, stock integer
) ON COMMIT DROP;

INSERT INTO demo VALUES
    ('ELEC-HEADPHONES-01', 'Wireless Noise-Cancelling Headphones', 'Over-ear Bluetooth headphones with 30-hour battery and active noise cancelling.', 19999, 'USD', ARRAY['electronics','travel'], 'https://images.shop.example/elec-headphones-01.jpg', 40),
    ('ELEC-SPEAKER-01', 'Portable Bluetooth Speaker', 'Waterproof speaker with deep bass, 12-hour battery and a carry strap.', 5999, 'USD', ARRAY['electronics'], 'https://images.shop.example/elec-speaker-01.jpg', 75),
    ('ELEC-KEYBOARD-01', 'Mechanical Keyboard', 'Tenkeyless mechanical keyboard with hot-swappable switches and white backlight.', 8999, 'USD', ARRAY['electronics'], 'https://images.shop.example/elec-keyboard-01.jpg', 50),
    ('ELEC-MOUSE-01', 'Ergonomic Wireless Mouse', 'Vertical mouse that keeps the wrist neutral; silent clicks, USB-C charging.', 3999, 'USD', ARRAY['electronics'], 'https://images.shop.example/elec-mouse-01.jpg', 120),
    ('ELEC-MONITOR-27', '27-inch 4K Monitor', 'IPS panel, 60 Hz, USB-C with 65 W power delivery for one-cable laptops.', 32999, 'USD', ARRAY['electronics'], 'https://images.shop.example/elec-monitor-27.jpg', 20),
    ('ELEC-WEBCAM-01', '1080p Webcam', 'Autofocus webcam with dual microphones and a privacy shutter.', 4999, 'USD', ARRAY['electronics'], 'https://images.shop.example/elec-webcam-01.jpg', 60),
    ('ELEC-CHARGER-65', '65 W USB-C Charger', 'Compact gallium-nitride charger with two USB-C ports and one USB-A.', 3499, 'USD', ARRAY['electronics','travel'], 'https://images.shop.example/elec-charger-65.jpg', 200),
    ('HOME-DESK-LAMP', 'LED Desk Lamp', 'Dimmable desk lamp with adjustable colour temperature and a USB port.', 2999, 'USD', ARRAY['home-office','electronics'], 'https://images.shop.example/home-desk-lamp.jpg', 80),
    ('HOME-CHAIR-01', 'Mesh Office Chair', 'Breathable mesh chair with lumbar support and adjustable armrests.', 24999, 'USD', ARRAY['home-office'], 'https://images.shop.example/home-chair-01.jpg', 15),
    ('HOME-STANDING-DESK', 'Standing Desk', 'Electric height-adjustable desk, 140 x 70 cm, with memory presets.', 44999, 'USD', ARRAY['home-office'], 'https://images.shop.example/home-standing-desk.jpg', 10),
    ('HOME-NOTEBOOK-A5', 'Dotted Notebook A5', '192 pages of 100 g/m2 paper that takes fountain pens without bleeding.', 1499, 'USD', ARRAY['home-office'], 'https://images.shop.example/home-notebook-a5.jpg', 300),
    ('HOME-PEN-SET', 'Fountain Pen Set', 'Steel-nib fountain pen with a converter and five ink cartridges.', 2499, 'USD', ARRAY['home-office'], 'https://images.shop.example/home-pen-set.jpg', 90),
    ('HOME-MONITOR-ARM', 'Monitor Arm', 'Gas-spring arm for screens up to 32 inches; clamps to the desk edge.', 8999, 'USD', ARRAY['home-office'], 'https://images.shop.example/home-monitor-arm.jpg', 35),
    ('KITCH-KETTLE-01', 'Electric Kettle', '1.7 litre kettle with temperature control for green tea and coffee.', 4999, 'USD', ARRAY['kitchen'], 'https://images.shop.example/kitch-kettle-01.jpg', 45),
    ('KITCH-FRENCH-PRESS', 'French Press', 'Double-walled stainless steel press that keeps coffee hot for an hour.', 3299, 'USD', ARRAY['kitchen'], 'https://images.shop.example/kitch-french-press.jpg', 70),
    ('KITCH-KNIFE-CHEF', 'Chef''s Knife', '20 cm chef''s knife forged from high-carbon stainless steel.', 7999, 'USD', ARRAY['kitchen'], 'https://images.shop.example/kitch-knife-chef.jpg', 25),
    ('KITCH-CAST-IRON', 'Cast Iron Skillet', 'Pre-seasoned 26 cm skillet for stovetop, oven and campfire.', 3999, 'USD', ARRAY['kitchen'], 'https://images.shop.example/kitch-cast-iron.jpg', 55),
    ('KITCH-GRINDER-01', 'Burr Coffee Grinder', 'Conical burr grinder with 40 settings from espresso to cold brew.', 9999, 'USD', ARRAY['kitchen'], 'https://images.shop.example/kitch-grinder-01.jpg', 30),
    ('KITCH-MUG-SET', 'Stoneware Mug Set', 'Four 350 ml stoneware mugs, dishwasher and microwave safe.', 2999, 'USD', ARRAY['kitchen'], 'https://images.shop.example/kitch-mug-set.jpg', 100),
    ('OUT-TENT-2P', 'Two-Person Tent', 'Freestanding backpacking tent, 1.8 kg, with two doors and vestibules.', 19999, 'USD', ARRAY['outdoor'], 'https://images.shop.example/out-tent-2p.jpg', 12),
    ('OUT-SLEEPING-BAG', 'Down Sleeping Bag', '800-fill down bag rated to -5 C, packs to the size of a loaf.', 27999, 'USD', ARRAY['outdoor'], 'https://images.shop.example/out-sleeping-bag.jpg', 18),
    ('OUT-HEADLAMP', 'Rechargeable Headlamp', '400-lumen headlamp with red light mode and USB-C charging.', 3499, 'USD', ARRAY['outdoor','travel'], 'https://images.shop.example/out-headlamp.jpg', 150),
    ('OUT-BOTTLE-1L', 'Insulated Water Bottle', '1 litre vacuum bottle: cold for 24 hours, hot for 12.', 2799, 'USD', ARRAY['outdoor','kitchen'], 'https://images.shop.example/out-bottle-1l.jpg', 200),
    ('OUT-BACKPACK-30', '30 L Daypack', 'Lightweight hiking daypack with a hip belt and rain cover.', 8999, 'USD', ARRAY['outdoor'], 'https://images.shop.example/out-backpack-30.jpg', 40),
    ('BOOK-RUST-01', 'Programming in Rust', 'A practical guide to ownership, traits, async and fearless concurrency.', 4499, 'USD', ARRAY['books'], 'https://images.shop.example/book-rust-01.jpg', 60),
    ('BOOK-DDIA', 'Designing Data Systems', 'How databases, streams and logs fit together, and what they guarantee.', 4999, 'USD', ARRAY['books'], 'https://images.shop.example/book-ddia.jpg', 50),
    ('BOOK-COOKING-01', 'Salt, Heat and Time', 'The four elements of good cooking, explained with recipes.', 3499, 'USD', ARRAY['books'], 'https://images.shop.example/book-cooking-01.jpg', 40),
    ('BOOK-HIKING-01', 'Trails of the North', 'Fifty day hikes with maps, elevation profiles and photographs.', 2999, 'USD', ARRAY['books'], 'https://images.shop.example/book-hiking-01.jpg', 30),
    ('APP-RAIN-JACKET', 'Waterproof Rain Jacket', 'Breathable three-layer shell with taped seams and a helmet hood.', 15999, 'USD', ARRAY['apparel'], 'https://images.shop.example/app-rain-jacket.jpg', 25),
    ('APP-WOOL-SOCKS', 'Merino Wool Socks', 'Three pairs of cushioned merino hiking socks.', 2499, 'USD', ARRAY['apparel'], 'https://images.shop.example/app-wool-socks.jpg', 180),
    ('APP-HOODIE-01', 'Organic Cotton Hoodie', 'Heavyweight hoodie in organic cotton with a kangaroo pocket.', 6999, 'USD', ARRAY['apparel'], 'https://images.shop.example/app-hoodie-01.jpg', 65),
    ('APP-CAP-01', 'Five-Panel Cap', 'Quick-dry cap with a packable brim, one size fits most.', 1999, 'USD', ARRAY['apparel'], 'https://images.shop.example/app-cap-01.jpg', 110);

INSERT INTO categories (id, slug, name)
SELECT pg_temp.uuid7(), slug, upper(left(slug, 1)) || replace(substr(slug, 2), '-', ' ')
FROM (SELECT DISTINCT unnest(categories) AS slug FROM demo) s
ON CONFLICT (slug) DO NOTHING;

WITH added AS (
    INSERT INTO products (id, sku, name, description, price_amount, currency, image_url)
    SELECT pg_temp.uuid7(), d.sku, d.name, d.description, d.price_amount, d.currency, d.image_url
    FROM demo d ORDER BY d.sku
    ON CONFLICT (sku) DO NOTHING
    RETURNING id, sku
), stocked AS (
    INSERT INTO inventory (product_id, on_hand)
    SELECT a.id, d.stock FROM added a JOIN demo d ON d.sku = a.sku
)
INSERT INTO product_categories (product_id, category_id)
SELECT a.id, c.id FROM added a JOIN demo d ON d.sku = a.sku JOIN categories c ON c.slug = ANY (d.categories);

COMMIT;

SELECT p.id, p.sku, p.name, p.description, p.price_amount, p.currency,
    ARRAY(SELECT c.slug FROM product_categories pc JOIN categories c ON c.id = pc.category_id
          WHERE pc.product_id = p.id ORDER BY c.slug) AS categories,
    COALESCE(i.on_hand - i.reserved, 0)::bigint AS stock_available, p.image_url, p.active, p.created_at, p.updated_at
FROM products p LEFT JOIN inventory i ON i.product_id = p.id
WHERE p.id = $1 AND p.deleted_at IS NULL

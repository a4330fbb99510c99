// The custom metrics every scenario shares.
import { Counter, Trend } from 'k6/metrics';

// The checkout funnel: started → placed (201) → confirmed | cancelled | stuck (still
// pending_payment when the poll gave up).
export const checkoutStarted = new Counter('checkout_started');
export const checkoutPlaced = new Counter('checkout_placed');
export const checkoutConfirmed = new Counter('checkout_confirmed');
export const checkoutCancelled = new Counter('checkout_cancelled');
export const checkoutStuck = new Counter('checkout_stuck');
// From the 201 of POST /v1/orders to the first poll that sees `confirmed`.
export const orderToConfirmed = new Trend('order_to_confirmed', true);

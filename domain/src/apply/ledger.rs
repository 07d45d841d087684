//! The ledger's commands (usage journals, prices, closing periods); the accounting
//! itself lives in `ledger.rs`.

use crate::command::{Outcome, Reply};
use crate::ids::Timestamp;
use crate::state::State;

impl State {
    pub(super) fn record_usage_op(
        &mut self,
        computer: &str,
        reporter: &Option<String>,
        transactions: &[crate::movements::UsageTransaction],
        now: Timestamp,
    ) -> Outcome {
        let (recorded, known) =
            self.record_usage(computer, reporter.as_deref(), transactions, now)?;
        Ok(Reply::UsageRecorded { recorded, known })
    }

    #[allow(clippy::too_many_arguments)] // the fields of the command, as it carries them
    pub(super) fn set_price_op(
        &mut self,
        provider: &str,
        scope: &crate::movements::PriceScope,
        resource: &str,
        price: &str,
        currency: &str,
        unit: &str,
        now: Timestamp,
    ) -> Outcome {
        let key = (provider.to_owned(), scope.clone(), resource.to_owned());
        self.set_price(key, price, currency, unit, now)?;
        Ok(Reply::Done)
    }

    pub(super) fn close_books_op(&mut self, until: &Timestamp, now: Timestamp) -> Outcome {
        self.close_books(*until, now)?;
        Ok(Reply::Done)
    }
}

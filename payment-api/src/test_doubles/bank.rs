//! [`ScriptedBank`]: a bank whose answers are played from a script, one per call.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
};

use payment_types::bank::{Charge, ChargeRequest, ChargeStatus};

use crate::bank::{AttemptOutcome, BankApi, Lookup};

type Action =
    Box<dyn FnOnce(ChargeRequest) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send>> + Send>;

/// One scripted answer to a charge attempt.
enum Step {
    Answer(AttemptOutcome),
    /// Never answers: the pipeline's attempt timeout cuts it off (ambiguous).
    Hang,
    /// Runs arbitrary work (e.g. what another worker does meanwhile), then answers.
    Run(Action),
}

/// A bank that plays its script; an unscripted call fails the test.
#[derive(Default)]
pub(crate) struct ScriptedBank {
    charges: Mutex<VecDeque<Step>>,
    lookups: Mutex<VecDeque<Lookup>>,
    charge_calls: AtomicU32,
    lookup_calls: AtomicU32,
}

impl std::fmt::Debug for ScriptedBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedBank")
            .field("charge_calls", &self.charge_calls)
            .field("lookup_calls", &self.lookup_calls)
            .finish()
    }
}

impl ScriptedBank {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    pub(crate) fn charge(&self, outcome: AttemptOutcome) -> &Self {
        self.push(Step::Answer(outcome))
    }

    pub(crate) fn hang(&self) -> &Self {
        self.push(Step::Hang)
    }

    pub(crate) fn run<F, Fut>(&self, action: F) -> &Self
    where
        F: FnOnce(ChargeRequest) -> Fut + Send + 'static,
        Fut: Future<Output = AttemptOutcome> + Send + 'static,
    {
        self.push(Step::Run(Box::new(move |request| {
            Box::pin(action(request))
        })))
    }

    pub(crate) fn lookup(&self, lookup: Lookup) -> &Self {
        self.lookups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(lookup);
        self
    }

    pub(crate) fn charge_calls(&self) -> u32 {
        self.charge_calls.load(Ordering::SeqCst)
    }

    pub(crate) fn lookup_calls(&self) -> u32 {
        self.lookup_calls.load(Ordering::SeqCst)
    }

    fn push(&self, step: Step) -> &Self {
        self.charges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(step);
        self
    }
}

/// The charge the bank makes for `request`.
pub(crate) fn charged(request: &ChargeRequest) -> Charge {
    Charge {
        id: format!("ch_{}", request.reference),
        reference: request.reference.clone(),
        amount: request.amount,
        currency: request.currency.clone(),
        status: ChargeStatus::Succeeded,
        decline_code: None,
        created_at: chrono::Utc::now(),
    }
}

#[async_trait::async_trait]
impl BankApi for Arc<ScriptedBank> {
    async fn charge(&self, request: &ChargeRequest, _request_id: &str) -> AttemptOutcome {
        self.charge_calls.fetch_add(1, Ordering::SeqCst);
        let step = self
            .charges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        match step {
            Some(Step::Answer(AttemptOutcome::Charged(_))) => {
                AttemptOutcome::Charged(charged(request))
            }
            Some(Step::Answer(outcome)) => outcome,
            Some(Step::Hang) => std::future::pending().await,
            Some(Step::Run(action)) => action(request.clone()).await,
            None => panic!("unscripted charge attempt {}", request.reference),
        }
    }

    async fn lookup(&self, reference: &str, _request_id: &str) -> Lookup {
        self.lookup_calls.fetch_add(1, Ordering::SeqCst);
        self.lookups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .unwrap_or_else(|| panic!("unscripted lookup {reference}"))
    }
}

/// A charge to script as [`AttemptOutcome::Charged`]: the bank replaces it with the charge it
/// makes for the request it gets.
pub(crate) fn charge_placeholder() -> Charge {
    Charge {
        id: String::new(),
        reference: String::new(),
        amount: 0,
        currency: String::new(),
        status: ChargeStatus::Succeeded,
        decline_code: None,
        created_at: chrono::Utc::now(),
    }
}
